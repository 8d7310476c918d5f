"""``python -m resemb_pl.pretrain {skipgram,node2vec,sms} --data <config> --out <file.npy>``.

The data options are those of ``CTRDataModule`` (``--data`` takes its YAML, ``--data.preset``
overrides one key); the method's options are the keyword arguments of its ``pretrain_*``
function (``--embedding_dim``, ``--epochs``, ...). Only training data is used: the training
samples for skip-gram and the siamese network, and the interest graph (built from training
sequences) for node2vec.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import command_boundary
from resemb_pl.cli_help import CompactHelpFormatter
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ConfigError, require
from resemb_pl.pretrain.node2vec import pretrain_node2vec
from resemb_pl.pretrain.skipgram import pretrain_skipgram
from resemb_pl.pretrain.sms import pretrain_sms

log = logging.getLogger(__name__)

METHODS = {
    "skipgram": (pretrain_skipgram, {"samples", "num_items"}),
    "node2vec": (pretrain_node2vec, {"data", "num_items"}),
    "sms": (pretrain_sms, {"samples", "item_category"}),
}


# The least value of the methods' options that means something; ``p`` and ``q`` must be above 0.
MINIMUM = {"embedding_dim": 1, "walk_length": 2, "walks_per_node": 1, "window": 1, "epochs": 1,
           "batch_size": 1, "num_negatives": 1, "lr": 0, "seed": 0, "p": 0, "q": 0}
STRICT = {"p", "q"}


DESCRIPTION = (
    "Pretrain an item table for the paper's +Skip, +n2v and +sms baselines: a plain embedding "
    "initialised from it (`PlainEmbedding(pretrained=<file.npy>)`, configs/embedding/skip.yaml, "
    "n2v.yaml, sms.yaml). Only training data is used. `python -m resemb_pl.pretrain METHOD "
    "--help` lists a method's options: the data module's (--data takes its YAML) and the method's."
)


def build_parser() -> ArgumentParser:
    """The parser of ``python -m resemb_pl.pretrain``; its errors raise (one line, exit 2)."""
    parser = ArgumentParser(prog="python -m resemb_pl.pretrain", description=DESCRIPTION,
                            formatter_class=CompactHelpFormatter, exit_on_error=False)
    commands = parser.add_subcommands(dest="method")
    for name, (function, skip) in METHODS.items():
        summary = sys.modules[function.__module__].__doc__.splitlines()[0]  # "+Skip: ..."
        sub = ArgumentParser(description=f"{summary} Writes the table (num_items + 1, "
                             "embedding_dim), row 0 zero, to --out (.npy).",
                             formatter_class=CompactHelpFormatter, exit_on_error=False)
        sub.add_class_arguments(CTRDataModule, "data")
        sub.add_argument("--out", type=str, required=True, help="Where to write the .npy table.")
        sub.add_function_arguments(function, None, skip=skip)
        commands.add_subcommand(name, sub, help=function.__doc__.splitlines()[0])
    return parser


def check_options(options: dict) -> None:
    """Refuse a method option without meaning (a size or count below 1, a negative ``lr``)."""
    for key, value in options.items():
        if key in MINIMUM:
            require(f"--{key}", value, MINIMUM[key], strict=key in STRICT)
    for width in options.get("hidden") or ():
        require("--hidden", width, 1)


def run(method: str, data: dict, out: str, options: dict) -> np.ndarray:
    """Pretrain with ``method`` on the data module built from ``data``; write and return it."""
    path = Path(out)
    if path.suffix != ".npy":
        raise ConfigError(f"--out {out}: the pretrained table is written as .npy")
    check_options(options)
    dm = CTRDataModule(**data)
    function = METHODS[method][0]
    if method == "node2vec":
        table, losses = function(dm.graph, dm.num_items, **options)
    elif method == "sms":
        table, losses = function(dm.samples("train"), dm.item_category, **options)
    else:
        table, losses = function(dm.samples("train"), dm.num_items, **options)
    array = table.numpy().astype(np.float32)
    array[0] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        np.save(fh, array, allow_pickle=False)
    trace = " -> ".join(f"{x:.4f}" for x in losses)
    print(f"{method}: loss {trace}; wrote {array.shape} to {path}")
    return array


@command_boundary("resemb_pl.pretrain")
def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m resemb_pl.pretrain``; bad input ends in one line and exit 2."""
    config = build_parser().parse_args(args)
    method = config.method
    options = config[method].as_dict()
    data = {k: v for k, v in options.pop("data").items() if not k.startswith("__")}
    out = options.pop("out")
    options = {k: v for k, v in options.items() if not k.startswith("__")}
    run(method, data, out, options)


if __name__ == "__main__":
    main()
