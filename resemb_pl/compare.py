"""``resemb-pl compare``: several model configs on one data config, over seeds, in one table.

    resemb-pl compare --data configs/data/synthetic_small.yaml \
        --models configs/model/din_plain.yaml configs/model/din_att.yaml --seeds 0 1 2

Every run goes through the same :class:`~resemb_pl.cli.ResembCLI` path as ``resemb-pl fit``
(``fit --config configs/default.yaml --data D --model M --seed_everything S``), so a model
config may name any backbone, embedding, optimizer or a user's own class. A run stops early
once ``val/auc`` has not improved for ``--patience`` validations, and its best checkpoint (by
``val/auc``) is tested with the same Trainer, so its TensorBoard folder holds the test metrics
next to its hyperparameters.

Writes to ``--out`` (default ``reports/compare/<data config name>``):

- ``results.csv``: one row per run, added as soon as the run is tested (atomic rewrite). The
  same command again skips the finished runs; a run stopped half-way starts again. Settings
  shared by the runs (the data, trainer and base configs, the extra arguments, the patience)
  are kept in ``results.settings.json``, and resuming with other ones is refused
  (:class:`resemb_pl.experiments.Grid`). A model config is known by its file name and a hash
  of its contents: an edited config trains again.
- ``compare.md`` / ``compare.csv``: per model, mean ± std over seeds of the test AUC, GAUC and
  logloss, RelaImpr (DIN eq. 11) of its mean AUC against the first model's, and on how many
  seeds its AUC beats the first model's;
- ``compare_auc.png``: the test AUC of every run, per seed;
- ``tb/<model>/seed<S>/``: the TensorBoard logs, ``config.yaml`` and checkpoints of each run;
  ``tensorboard --logdir <out>/tb``, tab HPARAMS, shows one row per run;
- ``command.txt``: every command line that wrote to the folder.

Other ``--trainer.*``, ``--data.*`` and ``--model.*`` options go to every run, as in
``resemb-pl fit``: ``--trainer.max_epochs 2 --data.cache_dir /tmp/cache``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import ArgumentParser, command_boundary
from resemb_pl.cli import ResembCLI, _show_package_logs
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ConfigError
from resemb_pl.experiments.cli import load_data_config
from resemb_pl.experiments.grid import Grid, append_command
from resemb_pl.experiments.tables import METRICS, compare_table, csv_value, save_figure
from resemb_pl.task import CTRTask

#: The trainer block used when ``--config`` is not given (the checkout's shared one).
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
#: Option prefixes that go to every run unchanged.
PASSED_ON = ("--trainer.", "--data.", "--model.")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``resemb-pl compare`` (a bad command line raises :class:`ConfigError`)."""
    p = ArgumentParser(
        prog="resemb-pl compare", allow_abbrev=False,
        description="Train several model configs on one data config over seeds, test each "
                    "run's best checkpoint and tabulate test AUC, GAUC and logloss.",
        epilog="Other --trainer.*, --data.* and --model.* options go to every run.",
    )
    p.add_argument("--data", required=True, type=Path, help="a data config (the data group)")
    p.add_argument("--models", required=True, type=Path, nargs="+",
                   help="model configs (the model group); the first is the baseline")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seed_everything of the runs (default: 0 1 2)")
    p.add_argument("--config", type=Path, action="append",
                   help="base config(s) with the trainer block, in order (default: "
                        "configs/default.yaml of this checkout)")
    p.add_argument("--trainer", type=Path, action="append", default=[],
                   help="trainer config(s) applied on top (a trainer group file)")
    p.add_argument("--patience", type=int, default=3,
                   help="stop a run after this many validations without a better val/auc "
                        "(0: no early stopping; default 3)")
    p.add_argument("--out", type=Path, help="output folder (default reports/compare/<data>)")
    p.add_argument("--fresh", action="store_true", help="discard the finished runs first")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv``; the options passed on to every run come back as a list.

    Raises:
        ConfigError: An option that is neither ``compare``'s nor a ``--trainer.``,
            ``--data.`` or ``--model.`` one, a negative seed or patience, or no config.
    """
    args, extra = build_parser().parse_known_args(argv)
    for i, word in enumerate(extra):
        if word.startswith("-") and not word.startswith(PASSED_ON) and not _is_number(word):
            raise ConfigError(f"unrecognized argument {word!r}; compare passes on only "
                              "--trainer.*, --data.* and --model.* options")
        if i == 0 and not word.startswith("-"):
            raise ConfigError(f"unrecognized argument {word!r}")
    for seed in args.seeds:
        if seed < 0:
            raise ConfigError(f"--seeds: must be >= 0, got {seed}")
    if args.patience < 0:
        raise ConfigError(f"--patience: must be >= 0, got {args.patience}")
    if args.config is None:
        if not DEFAULT_CONFIG.is_file():
            raise ConfigError(f"--config: {DEFAULT_CONFIG} not found; name a config with the "
                              "trainer block")
        args.config = [DEFAULT_CONFIG]
    args.command = shlex.join(["resemb-pl", "compare", *argv])
    return args, extra


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def read_yaml(path: Path, what: str) -> dict:
    """A YAML file holding a mapping (``{}`` when empty).

    Raises:
        ConfigError: Naming ``what`` and the file when it is missing, unreadable or not a
            mapping.
    """
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{what} {path}: cannot read it ({' '.join(str(err).split())})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {path}: must be a mapping of options")
    return value


def model_names(paths: list[Path]) -> list[str]:
    """The name of each model config: its file name without ``.yaml``.

    Raises:
        ConfigError: Two configs of one name (``a/din.yaml`` and ``b/din.yaml``).
    """
    names = [p.stem for p in paths]
    for name in set(names):
        same = [str(p) for p in paths if p.stem == name]
        if len(same) > 1:
            raise ConfigError(f"--models: {' and '.join(same)} have the same name {name!r}; "
                              "rename one")
    return names


class _CompareCLI(ResembCLI):
    """``ResembCLI`` that refuses a trainer without a checkpoint of the best ``val/auc``, and
    several processes (their launcher would start this command again in each)."""

    def before_fit(self) -> None:
        if self.trainer.world_size > 1:
            raise ConfigError(
                f"trainer: compare trains in one process, got {self.trainer.world_size} "
                "(strategy, devices, num_nodes); run `resemb-pl fit` per model for DDP"
            )
        if best_auc_checkpoint(self.trainer) is None:
            raise ConfigError(
                "trainer.callbacks: compare tests each run's best checkpoint and needs a "
                "ModelCheckpoint with monitor: val/auc and mode: max (configs/default.yaml "
                "has one)"
            )
        super().before_fit()


def best_auc_checkpoint(trainer: Trainer) -> ModelCheckpoint | None:
    """The trainer's first checkpoint callback that keeps the best ``val/auc``, if any."""
    return next((c for c in trainer.checkpoint_callbacks
                 if c.monitor == "val/auc" and c.mode == "max"), None)


@contextlib.contextmanager
def _bare_argv() -> Iterator[None]:
    # LightningCLI warns when sys.argv holds arguments besides the ones it is given.
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def fit_args(args: argparse.Namespace, extra: list[str], model: Path, name: str, seed: int,
             log_root: Path) -> list[str]:
    """The ``resemb-pl fit`` argument list of one run.

    The base configs, the trainer configs, the data and the model, the seed, a TensorBoard
    logger writing to ``<log_root>/<name>/seed<seed>`` (without a placeholder ``hp_metric``),
    early stopping on ``val/auc`` and then ``extra``.
    """
    logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(log_root), "name": name, "version": f"seed{seed}",
                            "default_hp_metric": False}}
    argv = ["fit", *[f"--config={c}" for c in args.config],
            *[f"--trainer={t}" for t in args.trainer],
            f"--data={args.data}", f"--model={model}", f"--seed_everything={seed}",
            f"--trainer.logger={json.dumps(logger)}"]
    if args.patience:
        stop = {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                "init_args": {"monitor": "val/auc", "mode": "max", "patience": args.patience}}
        argv.append(f"--trainer.callbacks+={json.dumps(stop)}")
    return argv + extra


def train_and_test(argv: list[str]) -> dict[str, Any]:
    """Fit through :class:`~resemb_pl.cli.ResembCLI`, then test the best checkpoint.

    Returns:
        ``auc``, ``gauc`` and ``logloss`` on test, ``best_val_auc``, ``epochs`` (trained),
        ``stopped_early``, ``checkpoint`` (the best one), ``log_dir`` and ``seconds``.
    """
    no_exit = {sub: {"exit_on_error": False} for sub in ResembCLI.subcommands()}
    start = time.perf_counter()
    with _bare_argv():
        cli = _CompareCLI(
            CTRTask, CTRDataModule, auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False, **no_exit}, args=argv,
        )
    trainer = cli.trainer
    ckpt = best_auc_checkpoint(trainer)
    # A run that never validated (a step budget) has no best checkpoint: its weights are tested.
    best = ckpt.best_model_path or None
    # Before testing: loading the best checkpoint restores the callbacks' state of that epoch,
    # when EarlyStopping had not stopped yet.
    stopped = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)
    (result,) = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    score = ckpt.best_model_score
    return {
        **{k: float(result[f"test/{k}"]) for k in METRICS},
        "best_val_auc": float(score) if score is not None else float("nan"),
        "epochs": trainer.current_epoch,
        "stopped_early": stopped,
        "checkpoint": best or "",
        "log_dir": trainer.log_dir or "",
        "seconds": round(time.perf_counter() - start, 2),
    }


def markdown(table: list[dict], title: str) -> str:
    """The table of :func:`compare_table` as Markdown."""
    lines = [f"# {title}", "",
             "| model | runs | test AUC | test GAUC | test logloss | RelaImpr (AUC) | "
             "beats the first |",
             "|---|---|---|---|---|---|---|"]
    for t in table:
        base = t["rela_impr"] is None
        lines.append(
            f"| {t['model']} | {t['n']} | {t['auc']} | {t['gauc']} | {t['logloss']} | "
            + ("baseline | – |" if base else
               f"{t['rela_impr']:+.2f}% | {t['wins']}/{t['paired']} seeds |")
        )
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict], table: list[dict], names: list[str],
                  seeds: list[int], title: str) -> None:
    """Write ``compare.md``, ``compare.csv`` and ``compare_auc.png`` (atomically)."""
    with atomic_open(out / "compare.md", "w") as fh:
        fh.write(markdown(table, title))
    columns = ["model", "n", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")],
               "rela_impr_pct", "wins", "paired"]
    with atomic_open(out / "compare.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({**{k: csv_value(v) for k, v in t.items()},
                          "rela_impr_pct": "" if t["rela_impr"] is None else
                          f"{t['rela_impr']:.4f}", "wins": "" if t["wins"] is None else t["wins"]}
                         for t in table)
    save_figure(auc_figure(rows, names, seeds, f"{out.name}: test AUC of each run"),
                out / "compare_auc.png")


def auc_figure(rows: list[dict], names: list[str], seeds: list[int], title: str):
    """The test AUC of every run: one line per model across the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        by_seed = {int(r["seed"]): float(r["auc"]) for r in rows if r["model"] == name}
        xs = [j for j, s in enumerate(seeds) if s in by_seed]
        ax.plot(xs, [by_seed[seeds[j]] for j in xs], "o--", color=f"C{i}", label=name,
                linewidth=0.8)
    ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
    ax.set_xlabel("seed")
    ax.set_ylabel("test AUC (best val/auc checkpoint)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def run(args: argparse.Namespace, extra: list[str]) -> list[dict[str, Any]]:
    """Train the runs that ``results.csv`` lacks, then write and print the table.

    Returns:
        The rows of :func:`compare_table`.
    """
    data = load_data_config(args.data)
    configs = [read_yaml(c, "--config") for c in args.config]
    trainers = [read_yaml(t, "--trainer") for t in args.trainer]
    models = [read_yaml(m, "--models") for m in args.models]
    del models  # read only to refuse an unreadable one before any training
    names = model_names(args.models)
    out = args.out or Path("reports") / "compare" / args.data.stem
    settings = {"data": data, "config": configs, "trainer": trainers, "extra": extra,
                "patience": args.patience}
    grid = Grid(out, settings, fresh=args.fresh)
    append_command(out, args.command)
    log_root = out / "tb"
    paths = dict(zip(names, args.models, strict=True))
    cells = [{"model": n, "config": _digest(paths[n]), "seed": s}
             for n in names for s in args.seeds]

    def train(cell: dict) -> dict:
        run_dir = log_root / cell["model"] / f"seed{cell['seed']}"
        if run_dir.exists():  # left by a run stopped before its row was written
            shutil.rmtree(run_dir)
        argv = fit_args(args, extra, paths[cell["model"]], cell["model"], cell["seed"], log_root)
        return train_and_test(argv)

    rows = grid.run(cells, train)
    title = (f"{args.data.stem}: test metrics of the best val/auc checkpoint, mean ± std over "
             f"seeds {' '.join(map(str, args.seeds))}; RelaImpr against {names[0]}")
    table = compare_table(rows, names, args.seeds)
    write_outputs(out, rows, table, names, args.seeds, title)
    print(markdown(table, title))
    print(f"{out}: compare.md, compare.csv, compare_auc.png, results.csv; "
          f"tensorboard --logdir {log_root} (HPARAMS: one row per run)", flush=True)
    return table


def compare(argv: list[str]) -> list[dict[str, Any]]:
    """Run ``resemb-pl compare`` with ``argv``, outside of an error boundary.

    Lightning's info lines are hidden while it runs (one line per run is printed instead).

    Returns:
        The rows of :func:`compare_table`.
    """
    _show_package_logs()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args, extra = parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        return run(args, extra)


@command_boundary("resemb-pl")
def main(argv: list[str] | None = None) -> None:
    """Entry point of ``resemb-pl compare``; a bad input ends in one line and exit code 2.

    SIGTERM stops the current run (exit code 143); the finished runs stay in ``results.csv``
    and the same command resumes.
    """
    try:
        compare(sys.argv[1:] if argv is None else argv)
    except SIGTERMException:
        print("resemb-pl: stopped by SIGTERM; the finished runs are in results.csv, run the "
              "same command to resume", file=sys.stderr)
        raise SystemExit(143) from None


if __name__ == "__main__":
    main()
