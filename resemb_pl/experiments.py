"""The machinery behind ``scripts/``: model specs by name, a resumable grid, one training run.

A grid is a list of cells, each a dict of parameters (always with a ``seed``). :class:`Grid`
runs the cells that its ``results.csv`` does not hold yet, appends each result as soon as the
cell finishes (by an atomic rewrite), and prints one line per cell with an ETA. Stopping a grid
and starting the same command again only trains the missing cells.

Outputs live under ``reports/<experiment>/<dataset>/`` with a ``command.txt`` holding every
command line that wrote there.

Example::

    grid = Grid(Path("reports/table3/synthetic_small"), settings={"epochs": 5})
    grid.run([{"embedding": "att", "seed": 0}], lambda cell: {"auc": 0.9})
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonargparse
import numpy as np
import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch_geometric.data import Data

import resemb_pl.nn.models as models
from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import ArgumentParser, command_boundary, raised_in_package
from resemb_pl.callbacks import EmbeddingMonitor, embedding_stats, top_items
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.protocols import Samples
from resemb_pl.errors import ConfigError, ResembError, require
from resemb_pl.task import CTRTask

CONVS = {
    "avg": "resemb_pl.nn.conv.MeanConv",
    "gcn": "resemb_pl.nn.conv.GCNNormConv",
    "att": "resemb_pl.nn.conv.DotAttentionConv",
}
EMBEDDINGS = ("plain", *CONVS)
METRICS = ("auc", "gauc", "logloss")


# -- model specs ----------------------------------------------------------------------------
def embedding_spec(name: str, residual_l2: float = 0.006) -> dict:
    """The ``class_path`` dict of an embedding: ``plain`` or a res-embedding ``avg|gcn|att``."""
    if name == "plain":
        return {"class_path": "resemb_pl.nn.PlainEmbedding"}
    if name not in CONVS:
        raise ConfigError(f"unknown embedding {name!r}; choose from {', '.join(EMBEDDINGS)}")
    return {
        "class_path": "resemb_pl.nn.ResEmbedding",
        "init_args": {"conv": {"class_path": CONVS[name]}, "residual_l2": residual_l2},
    }


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def available_backbones() -> dict[str, str]:
    """Backbone names -> class paths, for the classes :mod:`resemb_pl.nn.models` exports now.

    A backbone is known by its class name and by its module's name (``EmbeddingMLP`` in
    ``mlp.py`` is ``embeddingmlp`` and ``mlp``), lower case, letters and digits only.
    """
    found, by_module = {}, {}
    for name in getattr(models, "__all__", dir(models)):
        obj = getattr(models, name, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj is not getattr(
            models, "CTRBackbone", None
        ):
            found[_norm(name)] = f"resemb_pl.nn.models.{name}"
            by_module.setdefault(_norm(obj.__module__.rpartition(".")[2]), []).append(name)
    for module, names in by_module.items():
        if len(names) == 1:
            found.setdefault(module, f"resemb_pl.nn.models.{names[0]}")
    return found


def backbone_spec(name: str) -> dict:
    """The ``class_path`` dict of a backbone exported by :mod:`resemb_pl.nn.models`.

    Matching ignores case and punctuation: ``wide_deep`` finds ``WideDeep``.
    """
    found = available_backbones()
    if _norm(name) not in found:
        raise ConfigError(
            f"unknown backbone {name!r}; resemb_pl.nn.models has {', '.join(sorted(found))}"
        )
    return {"class_path": found[_norm(name)]}


def model_spec(
    backbone: str,
    embedding: str,
    *,
    embedding_dim: int = 18,
    lr: float = 1e-3,
    residual_l2: float = 0.006,
) -> dict:
    """Keyword arguments of :class:`~resemb_pl.task.CTRTask` (less the data sizes)."""
    return {
        "embedding_dim": embedding_dim,
        "embedding": embedding_spec(embedding, residual_l2),
        "backbone": backbone_spec(backbone),
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}},
    }


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


def graph_from_samples(samples: Samples, num_items: int, window: int, top_k: int) -> Data:
    """Rebuild the interest graph from the training sequences that ``samples`` were cut from.

    A user's graph sequence is the span of ``samples.seq`` from their earliest history start to
    their latest history end, plus the slot after it when that is a positive target. Under the
    DIN protocol (both splits) this is exactly the span the data module builds the graph from.
    Under the MovieLens protocol it is too, except that a user's last event rated exactly at
    the like threshold (liked, yet a negative) is left out.
    """
    if not len(samples):
        return build_interest_graph([], [], num_items, window, top_k)
    end = samples.hist_start + samples.hist_len
    order = np.argsort(samples.user, kind="stable")
    users = samples.user[order]
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    group = np.cumsum(np.r_[True, users[1:] != users[:-1]]) - 1
    lo = np.minimum.reduceat(samples.hist_start[order], first)
    hi = np.maximum.reduceat(end[order], first)
    positive_at_end = (samples.label[order] > 0.5) & (end[order] == hi[group])
    hi = hi + np.bincount(group, weights=positive_at_end, minlength=len(first)).clip(max=1)
    hi = hi.astype(np.int64)
    index = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
    return build_interest_graph(samples.seq[index], hi - lo, num_items, window, top_k)


class SubsetDataModule(CTRDataModule):
    """A :class:`CTRDataModule` that trains on a random fraction of the training users.

    The kept users are drawn with ``fraction_seed``; their training samples are kept whole, and
    the interest graph is rebuilt from their sequences only, so a res-embedding sees no more
    data than the plain embedding. Validation and test samples are untouched.

    Args:
        train_user_fraction: Fraction of training users kept, in ``(0, 1]``.
        fraction_seed: Seed of the draw of users.
        **kwargs: Arguments of :class:`CTRDataModule`.
    """

    def __init__(self, train_user_fraction: float = 1.0, fraction_seed: int = 0, **kwargs) -> None:
        if not 0 < train_user_fraction <= 1:
            raise ConfigError(f"train_user_fraction: must lie in (0, 1], got {train_user_fraction}")
        super().__init__(**kwargs)
        self.train_user_fraction, self.fraction_seed = train_user_fraction, fraction_seed
        self._train: Samples | None = None
        self._graph: Data | None = None

    def samples(self, stage: str) -> Samples:
        if stage != "train" or self.train_user_fraction >= 1:
            return super().samples(stage)
        if self._train is None:
            train = super().samples("train")
            users = np.unique(train.user)
            rng = np.random.default_rng(self.fraction_seed)
            n = max(1, int(round(self.train_user_fraction * len(users))))
            kept = rng.choice(users, size=n, replace=False)
            self._train = train.subset(np.flatnonzero(np.isin(train.user, kept)))
        return self._train

    @property
    def graph(self) -> Data:
        if self.train_user_fraction >= 1:
            return super().graph
        if self._graph is None:
            h = self.hparams
            self._graph = graph_from_samples(self.samples("train"), self.num_items, h.window,
                                             h.top_k)
        return self._graph


# -- one run --------------------------------------------------------------------------------
@dataclass
class Budget:
    """How long and where each cell trains.

    Args:
        max_epochs: Epochs per run.
        max_steps: Optimizer steps per run (``-1``: no limit).
        limit_train_batches: Batches (int) or fraction (float) of training per epoch.
        limit_val_batches: Batches or fraction of validation.
        val_check_interval: Validate every this many steps (int) or fraction of an epoch.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices.
    """

    max_epochs: int = 5
    max_steps: int = -1
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    val_check_interval: float = 1.0
    accelerator: str = "auto"
    devices: int | str = 1


def fit_and_test(
    data: dict,
    model: dict,
    seed: int,
    budget: Budget,
    *,
    train_user_fraction: float = 1.0,
    log_dir: Path | None = None,
    callbacks: Iterable[Callback] = (),
    on_tested: Callable[[CTRTask, CTRDataModule], dict] | None = None,
    deterministic: bool | str | None = None,
) -> dict:
    """Train one model, test the epoch with the best validation AUC, return the numbers.

    The data (its generation, negatives and splits) follows the data config's own seed; ``seed``
    seeds the model initialisation, the batch order and the draw of training users.

    Args:
        data: Arguments of :class:`CTRDataModule`.
        model: Arguments of :class:`CTRTask` besides ``num_items`` and ``num_categories``.
        seed: Seed of the run.
        budget: Epochs, steps, batches and device.
        train_user_fraction: Fraction of training users to train on.
        log_dir: TensorBoard logs go here (with an :class:`EmbeddingMonitor`); ``None``: no logs.
        callbacks: Extra callbacks.
        on_tested: Called with the best model and the data module; its dict joins the result.
        deterministic: The Trainer's ``deterministic`` (``True``, ``"warn"``, ``None``: as is).

    Returns:
        ``auc``, ``gauc``, ``logloss`` on test; the envelope radius metrics of the clicked items
        (and ``res_ratio`` for a res-embedding); ``params`` (all), ``embedding_params`` (the
        item embedding's), ``epochs``, ``steps``, ``seconds``.
    """
    dm = SubsetDataModule(train_user_fraction=train_user_fraction, fraction_seed=seed, **data)
    seed_everything(seed, verbose=False)
    task = CTRTask(dm.num_items, dm.num_categories, **model)
    logger: TensorBoardLogger | bool = False
    callbacks = list(callbacks)
    if log_dir is not None:
        logger = TensorBoardLogger(str(log_dir.parent), name=log_dir.name, version="")
        callbacks.append(EmbeddingMonitor())
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resemb-ckpt-") as tmp:
        ckpt = ModelCheckpoint(dirpath=tmp, monitor="val/auc", mode="max")
        b = asdict(budget)
        trainer = Trainer(
            **b, logger=logger, callbacks=[ckpt, *callbacks], enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=10, num_sanity_val_steps=0,
            deterministic=deterministic,
        )
        trainer.fit(task, datamodule=dm)
        seconds = time.perf_counter() - start
        # A step budget can end training before its first validation: then there is no best
        # checkpoint, and the final weights are tested.
        best = "best" if ckpt.best_model_path else None
        (result,) = trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False)
    row = {k: result[f"test/{k}"] for k in METRICS}
    row.update(embedding_stats(task, dm, top_items(dm, None)))
    if on_tested is not None:
        row.update(on_tested(task, dm))
    row.update(params=sum(p.numel() for p in task.parameters()),
               embedding_params=sum(p.numel() for p in task.embedding.parameters()),
               epochs=trainer.current_epoch,
               steps=trainer.global_step, seconds=round(seconds, 2))
    return row


# -- the grid -------------------------------------------------------------------------------
def cell_id(cell: dict) -> str:
    """A file-name-safe id of a cell: ``backbone=din,embedding=att,seed=0``."""
    return ",".join(f"{k}={cell[k]}" for k in cell).replace("/", "_")


class Grid:
    """Runs cells, appends each result to a CSV as it finishes, and skips finished cells.

    Args:
        out_dir: The experiment's folder (``reports/<experiment>/<dataset>``).
        settings: Everything that all cells share (data config, budget, ...). A grid resumed
            with other settings is refused, so one CSV never mixes two setups.
        name: Base name of the results file (``<name>.csv``) and its settings file.
    """

    def __init__(self, out_dir: Path, settings: dict, name: str = "results") -> None:
        self.out_dir = Path(out_dir)
        self.csv = self.out_dir / f"{name}.csv"
        self.settings_file = self.out_dir / f"{name}.settings.json"
        self.settings = json.loads(json.dumps(settings, default=str))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.settings_file.exists():
            old = json.loads(self.settings_file.read_text())
            if old != self.settings and self.csv.exists():
                diff = sorted(k for k in old.keys() | self.settings.keys()
                              if old.get(k) != self.settings.get(k))
                raise ConfigError(
                    f"{self.csv} was produced with other settings ({', '.join(diff)}); "
                    "pass --fresh to start over or --out for another folder"
                )
        with atomic_open(self.settings_file, "w") as fh:
            fh.write(json.dumps(self.settings, indent=2, sort_keys=True))

    def rows(self) -> list[dict[str, str]]:
        """The finished cells' rows, as read back from the CSV."""
        if not self.csv.exists():
            return []
        with open(self.csv, newline="") as fh:
            return list(csv.DictReader(fh))

    def done(self) -> set[str]:
        return {row["cell"] for row in self.rows()}

    def run(self, cells: list[dict], fn: Callable[[dict], dict]) -> list[dict[str, str]]:
        """Run the missing cells with ``fn(cell) -> metrics``; return every row of the grid."""
        ids = [cell_id(c) for c in cells]
        if len(set(ids)) != len(ids):
            raise ConfigError("the grid has duplicate cells; check the lists of values")
        done = self.done()
        todo = [c for c, i in zip(cells, ids, strict=True) if i not in done]
        if len(todo) < len(cells):
            print(f"{self.csv}: {len(cells) - len(todo)} of {len(cells)} cells already done, "
                  "skipping them", flush=True)
        start = time.perf_counter()
        for n, cell in enumerate(todo, 1):
            print(f"[{n}/{len(todo)}] {cell_id(cell)}: training", flush=True)
            result = fn(cell)
            self._append({"cell": cell_id(cell), **cell, **result})
            elapsed = time.perf_counter() - start
            eta = elapsed / n * (len(todo) - n)
            shown = " ".join(f"{k}={result[k]:.4f}" for k in METRICS if k in result)
            print(f"[{n}/{len(todo)}] {cell_id(cell)}: {shown} "
                  f"({_duration(elapsed / n)}/cell, ETA {_duration(eta)})", flush=True)
        return [r for r in self.rows() if r["cell"] in set(ids)]

    def _append(self, row: dict) -> None:
        rows = self.rows()
        rows.append({k: _plain(v) for k, v in row.items()})
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_open(self.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(rows)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


# -- tables ---------------------------------------------------------------------------------
def mean_std(values: Iterable[float | str]) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring empty and NaN entries."""
    v = np.array([float(x) for x in values if x not in ("", None)], dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def summarize(
    rows: list[dict], by: list[str], metrics: Iterable[str]
) -> list[dict[str, Any]]:
    """Group ``rows`` by the columns ``by``; mean, std and count of each metric per group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, sel in groups.items():
        entry: dict[str, Any] = dict(zip(by, key, strict=True))
        entry["n"] = len(sel)
        for m in metrics:
            entry[f"{m}_mean"], entry[f"{m}_std"] = mean_std(r.get(m, "") for r in sel)
        out.append(entry)
    return out


def write_table(path: Path, rows: list[dict], columns: list[str], title: str) -> None:
    """Write ``rows`` as ``<path>.csv`` and a Markdown table ``<path>.md`` (with ``title``)."""
    with atomic_open(path.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _plain(v) for k, v in r.items()} for r in rows)
    md = [f"# {title}", "", "| " + " | ".join(columns) + " |",
          "|" + "|".join("---" for _ in columns) + "|"]
    md += ["| " + " | ".join(_cell_text(r.get(c, "")) for c in columns) + " |" for r in rows]
    with atomic_open(path.with_suffix(".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")


def _cell_text(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def pm(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` as text."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def add_pm(table: list[dict], metrics: Iterable[str], *, blank_nan: bool = False) -> None:
    """Set ``row[m]`` to :func:`pm` of ``row[m_mean]`` and ``row[m_std]`` in every row of ``table``.

    Args:
        table: Rows of :func:`summarize`.
        metrics: The metrics to format.
        blank_nan: Leave ``row[m]`` empty where the mean is NaN (no run measured ``m``).
    """
    for row in table:
        for m in metrics:
            mean = row[f"{m}_mean"]
            row[m] = "" if blank_nan and mean != mean else pm(mean, row[f"{m}_std"])


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


def check_names(*, backbones: Iterable[str] = (), embeddings: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` before any training on a backbone or embedding name unknown."""
    for name in backbones:
        backbone_spec(name)
    for name in embeddings:
        embedding_spec(name)


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
    history = out_dir / "command.txt"  # every command run in this folder, appended whole
    earlier = history.read_text() if history.exists() else ""
    with atomic_open(history, "w") as fh:
        fh.write(earlier + args.command + "\n")
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


# -- t-SNE ----------------------------------------------------------------------------------
def tsne(
    x: np.ndarray,
    perplexity: float = 30.0,
    iterations: int = 1000,
    seed: int = 0,
    learning_rate: float | None = None,
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) to two dimensions.

    For up to a few thousand points: Gaussian affinities calibrated to ``perplexity`` by
    bisection, early exaggeration
    (12 for the first 250 iterations), momentum 0.5 then 0.8, and per-coordinate gains. The
    learning rate defaults to ``max(n / 48, 50)``, scikit-learn's ``"auto"``.

    Returns:
        ``(n, 2)`` coordinates.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = x.size(0)
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    learning_rate = learning_rate or max(n / 48, 50.0)
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    # Bisection on the precision beta of each row so that the row's entropy is log(perplexity).
    target = math.log(perplexity)
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), float("inf"), dtype=torch.float64)
    beta = torch.ones(n, dtype=torch.float64)
    scale = d2[torch.isfinite(d2)].median().clamp(min=1e-12)
    for _ in range(64):
        logits = -d2 / scale * beta[:, None]
        p = torch.softmax(logits, 1)
        entropy = -(p * torch.log(p.clamp(min=1e-300))).sum(1)
        high = entropy > target  # too flat: raise beta
        lo = torch.where(high, beta, lo)
        hi = torch.where(high, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    p = ((p + p.T) / (2 * n)).clamp(min=1e-12).float()
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, generator=gen) * 1e-4
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    for it in range(iterations):
        exaggeration = 12.0 if it < 250 else 1.0
        momentum = 0.5 if it < 250 else 0.8
        sq = y.pow(2).sum(1)
        num = 1.0 / (1.0 + (sq[:, None] + sq[None, :] - 2 * y @ y.T).clamp(min=0))
        num.fill_diagonal_(0.0)
        q = (num / num.sum()).clamp(min=1e-12)
        w = (exaggeration * p - q) * num
        grad = 4 * (w.sum(1, keepdim=True) * y - w @ y)
        same = (grad > 0) == (velocity > 0)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp(min=0.01)
        velocity = momentum * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y.double().numpy()


def knn_purity(x: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours (Euclidean) that share its label."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    d = torch.cdist(t, t)
    d.fill_diagonal_(float("inf"))
    k = min(k, len(t) - 1)
    nn_idx = d.topk(k, largest=False).indices.numpy()
    labels = np.asarray(labels)
    return float((labels[nn_idx] == labels[:, None]).mean())
