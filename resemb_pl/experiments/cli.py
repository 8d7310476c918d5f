"""The command line of the experiment scripts: common arguments, set-up, error boundary.

Outputs live under ``reports/<experiment>/<dataset>/`` with a ``command.txt`` holding every
command line that wrote there.

Example::

    def main(argv=None):
        parser = script_parser(__doc__)
        return run_script("my_experiment", parser, argv, run)
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonargparse
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from resemb_pl.boundary import ArgumentParser, command_boundary, raised_in_package
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ConfigError, ResembError, require
from resemb_pl.experiments.grid import Budget, Grid, append_command
from resemb_pl.experiments.registry import model_spec


# -- data -----------------------------------------------------------------------------------
def load_data_config(path: str | Path, **overrides: Any) -> dict:
    """Read a data config (the contents of the ``data:`` group) and apply ``overrides``.

    Its keys and the types of their values are checked against :class:`CTRDataModule`'s
    arguments, as ``resemb-pl --data`` checks them.

    Raises:
        ConfigError: Naming the file and the key that is unknown or of the wrong type.
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the data config ({err})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a data config must be a mapping of CTRDataModule arguments")
    if "data" in config and isinstance(config["data"], dict):
        config = config["data"]
    config.update({k: v for k, v in overrides.items() if v is not None})
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(CTRDataModule)
    try:
        parser.parse_object(config)
    except argparse.ArgumentError as err:
        raise ConfigError(f"{path}: {' '.join(str(err).split())}") from None
    return config


def dataset_name(path: str | Path, config: dict) -> str:
    """``synthetic_<preset>`` for synthetic data, else the data config's file name stem."""
    if config.get("source", "synthetic") == "synthetic":
        return f"synthetic_{config.get('preset', 'small')}"
    return Path(path).stem


# -- the command line -----------------------------------------------------------------------
def add_common_args(parser: argparse.ArgumentParser, seeds: int = 3, epochs: int = 5) -> None:
    """Arguments every experiment script takes: data, seeds, budget, device, output."""
    parser.add_argument("--data", required=True, help="a data config (contents of `data:`)")
    parser.add_argument("--preset", help="override the synthetic preset (e.g. tiny)")
    parser.add_argument("--cache-dir", help="override data.cache_dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(seeds)))
    parser.add_argument("--epochs", type=int, default=epochs, help="max epochs per run")
    parser.add_argument("--max-steps", type=int, default=-1, help="max optimizer steps per run")
    parser.add_argument("--limit-train-batches", type=_number, default=1.0)
    parser.add_argument("--limit-val-batches", type=_number, default=1.0)
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--backbone", default="din", help="backbone name (resemb_pl.nn.models)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--embedding-dim", type=int, default=18)
    parser.add_argument("--residual-l2", type=float, default=0.006)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports root")
    parser.add_argument("--fresh", action="store_true", help="discard finished cells")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard logs (scalars, radius, projector) per cell")


def script_parser(doc: str, *, seeds: int = 3, epochs: int = 5) -> argparse.ArgumentParser:
    """A script's parser: the first line of its ``doc`` as description, the common arguments.

    A bad command line raises (:class:`resemb_pl.boundary.ArgumentParser`), so that
    :func:`run_script` reports it in one line.
    """
    parser = ArgumentParser(description=doc.split("\n")[0])
    add_common_args(parser, seeds=seeds, epochs=epochs)
    return parser


def run_script(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], None],
) -> int:
    """Parse ``argv`` with ``parser`` and ``run(args)``, both under :func:`script_main`."""
    return script_main(name, lambda: run(parse(parser, argv)))


def cell_model(args: argparse.Namespace, cell: dict) -> dict:
    """The model spec of a cell, the command line filling in what the cell does not set.

    The cell's ``backbone``, ``embedding``, ``dim`` and ``residual_l2`` win over ``--backbone``,
    ``--embedding-dim`` and ``--residual-l2``; ``--lr`` is always the command line's.
    """
    return model_spec(cell.get("backbone", args.backbone), cell["embedding"],
                      embedding_dim=cell.get("dim", args.embedding_dim), lr=args.lr,
                      residual_l2=cell.get("residual_l2", args.residual_l2))


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (``None``: the command line) and keep the command as ``args.command``."""
    args = parser.parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    args.command = shlex.join([Path(sys.executable).name, sys.argv[0], *words])
    return args


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


@dataclass
class Setup:
    """What a script needs after parsing: the data config, its folder, the budget."""

    data: dict
    dataset: str
    out_dir: Path
    budget: Budget
    settings: dict
    tensorboard: bool = False

    def grid(self, name: str = "results", drop: Iterable[str] = ()) -> Grid:
        """The :class:`Grid` ``<name>.csv`` in the output folder, on the settings less ``drop``."""
        settings = {k: v for k, v in self.settings.items() if k not in set(drop)}
        return Grid(self.out_dir, settings, name=name)

    def log_dir(self, cell: dict) -> Path | None:
        """A cell's TensorBoard folder ``tb/<values>_seed<seed>``; ``None`` without logs."""
        if not self.tensorboard:
            return None
        values = [str(v) for k, v in cell.items() if k != "seed"]
        return self.out_dir / "tb" / "_".join([*values, f"seed{cell['seed']}"])


def check_args(args: argparse.Namespace) -> None:
    """Refuse common arguments without meaning (naming the option) before anything runs."""
    for seed in args.seeds:
        require("--seeds", seed, 0)
    require("--epochs", args.epochs, 1)
    if args.max_steps != -1:
        require("--max-steps (or -1 for no limit)", args.max_steps, 1)
    require("--lr", args.lr, 0)
    require("--embedding-dim", args.embedding_dim, 1)
    require("--residual-l2", args.residual_l2, 0)


# The options of the common arguments that set a Trainer argument.
_BUDGET_FLAGS = {"max_epochs": "--epochs", "max_steps": "--max-steps",
                 "limit_train_batches": "--limit-train-batches",
                 "limit_val_batches": "--limit-val-batches", "accelerator": "--accelerator",
                 "devices": "--devices"}


def check_budget(budget: Budget) -> None:
    """Build a Trainer with ``budget`` once, so a setting it refuses stops the script at once.

    Raises:
        ConfigError: Naming the option (``--epochs``, ``--accelerator``, ...) and the reason.
    """
    settings = asdict(budget)
    try:
        Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError) as err:
        if isinstance(err, ResembError) or raised_in_package(err):
            raise
        message = " ".join(str(err).split())
        named = [k for k in settings if re.search(rf"\b{k}\b", message)]
        flags = (
            [_BUDGET_FLAGS.get(named[0], named[0])]
            if named
            else [f"--accelerator {budget.accelerator}", f"--devices {budget.devices}"]
        )
        raise ConfigError(f"{' '.join(flags)}: {message}") from None


def setup(args: argparse.Namespace, experiment: str, **budget: Any) -> Setup:
    """Check the arguments, read the data config, make ``reports/<experiment>/<dataset>/``.

    The command line is appended to its ``command.txt``.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    check_args(args)
    data = load_data_config(args.data, preset=args.preset, cache_dir=args.cache_dir)
    dataset = dataset_name(args.data, data)
    out_dir = args.out / experiment / dataset
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    b = Budget(max_epochs=args.epochs, max_steps=args.max_steps,
               limit_train_batches=args.limit_train_batches,
               limit_val_batches=args.limit_val_batches, accelerator=args.accelerator,
               devices=devices, **budget)
    check_budget(b)
    if args.fresh and out_dir.exists():
        for f in out_dir.glob("results*.csv"):
            f.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    append_command(out_dir, args.command)
    settings = {"data": data, "budget": asdict(b), "lr": args.lr, "backbone": args.backbone,
                "embedding_dim": args.embedding_dim, "residual_l2": args.residual_l2}
    settings["budget"].pop("accelerator")  # the device does not change what a cell means
    settings["budget"].pop("devices")
    return Setup(data, dataset, out_dir, b, settings, args.tensorboard)


def script_main(name: str, body: Callable[[], None]) -> int:
    """Run a script's body under :class:`~resemb_pl.boundary.command_boundary`.

    A user error (bad data or option, a path the system refuses, a Trainer setting that cannot
    work) is one line ``<name>: error: <what>: <why>`` on stderr.

    Returns:
        0, or 2 after a user error.
    """
    boundary = command_boundary(name)
    try:
        with boundary:
            body()
    except SystemExit:
        if boundary.reported is None:
            raise
        return 2
    return 0


