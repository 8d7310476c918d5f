"""A resumable grid of cells and one training run per cell.

A grid is a list of cells, each a dict of parameters (always with a ``seed``). :class:`Grid`
runs the cells that its ``results.csv`` does not hold yet, appends each result as soon as the
cell finishes (by an atomic rewrite), and prints one line per cell with an ETA. Stopping a grid
and starting the same command again only trains the missing cells.

Example::

    grid = Grid(Path("reports/table3/synthetic_small"), settings={"epochs": 5})
    grid.run([{"embedding": "att", "seed": 0}], lambda cell: {"auc": 0.9})
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from resemb_pl.atomic import atomic_open
from resemb_pl.callbacks import EmbeddingMonitor, embedding_stats, top_items
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ConfigError
from resemb_pl.experiments.tables import METRICS, csv_value
from resemb_pl.task import CTRTask


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
    dm = CTRDataModule(**data)
    dm.restrict_training_users(train_user_fraction, seed)
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
        fresh: Discard the finished cells (the results and settings files) first.
    """

    def __init__(self, out_dir: Path, settings: dict, name: str = "results",
                 fresh: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.csv = self.out_dir / f"{name}.csv"
        self.settings_file = self.out_dir / f"{name}.settings.json"
        self.settings = json.loads(json.dumps(settings, default=str))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.csv.unlink(missing_ok=True)
            self.settings_file.unlink(missing_ok=True)
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
        rows.append({k: csv_value(v) for k, v in row.items()})
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_open(self.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(rows)


def append_command(out_dir: Path, command: str) -> None:
    """Append ``command`` to ``<out_dir>/command.txt``: every command that wrote to the folder."""
    history = Path(out_dir) / "command.txt"
    earlier = history.read_text() if history.exists() else ""
    with atomic_open(history, "w") as fh:
        fh.write(earlier + command + "\n")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


