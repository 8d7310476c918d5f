"""Train one backbone with the plain embedding and each res-embedding; report test metrics.

    python scripts/compare_embeddings.py --data configs/data/synthetic_small.yaml \
        --seeds 0 1 2 --out reports/compare/small.csv

A front end of ``resemb-pl compare`` (:mod:`resemb_pl.compare`) for DIN with the embeddings
``plain``, ``avg``, ``gcn`` and ``att``: it writes their model configs to
``<out folder>/models/<embedding>.yaml`` (``--lr``, ``--embedding-dim`` and ``--residual-l2``
filled in), runs ``resemb-pl compare`` into ``<out folder>/`` (the ``--out`` path without
``.csv``: ``results.csv``, ``compare.md``, TensorBoard logs; the same command resumes), and
writes ``--out``, a CSV with ``embedding,seed,auc,gauc,logloss``. Every run uses the same data
(the data config's seed) and trains ``--epochs`` epochs (no early stopping); the seed of a run
seeds the model initialisation and the batch order. The model evaluated on the test set is the
epoch with the best validation AUC. ``resemb-pl compare`` takes any model configs instead.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
import yaml

from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import ArgumentParser
from resemb_pl.compare import compare
from resemb_pl.experiments import (
    EMBEDDINGS,
    METRICS,
    add_pm,
    load_data_config,
    model_spec,
    script_main,
    summarize,
)

FIELDS = ["embedding", "seed", *METRICS]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run; 2 after a bad input (one line on stderr)."""
    return script_main("compare_embeddings", lambda: _main(argv))


def _main(argv: list[str] | None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a data config (contents of the data group)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS), choices=list(EMBEDDINGS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding-dim", type=int, default=18)
    p.add_argument("--residual-l2", type=float, default=0.006)
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_data_config(args.data)  # a bad data config fails here, before anything is written
    folder = args.out.with_suffix("")
    models = []
    for name in args.embeddings:
        spec = model_spec("din", name, embedding_dim=args.embedding_dim, lr=args.lr,
                          residual_l2=args.residual_l2)
        models.append(folder / "models" / f"{name}.yaml")
        with atomic_open(models[-1], "w") as fh:
            yaml.safe_dump(spec, fh, sort_keys=False)
    deterministic = "true" if args.accelerator == "cpu" else "warn"
    compare(["--data", str(args.data), "--models", *map(str, models),
             "--seeds", *map(str, args.seeds), "--out", str(folder), "--patience", "0",
             f"--trainer.max_epochs={args.epochs}", f"--trainer.accelerator={args.accelerator}",
             f"--trainer.deterministic={deterministic}",
             "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    with open(folder / "results.csv", newline="") as fh:
        done = {(r["model"], int(r["seed"])): r for r in csv.DictReader(fh)}
    rows = [{"embedding": name, "seed": seed, **{k: float(done[(name, seed)][k]) for k in METRICS}}
            for seed in args.seeds for name in args.embeddings]
    text = io.StringIO()
    writer = csv.DictWriter(text, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, **{k: f"{r[k]:.6f}" for k in METRICS}} for r in rows)
    with atomic_open(args.out, "w", newline="") as fh:
        fh.write(text.getvalue())
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    """Mean ± std over seeds of each metric, per embedding."""
    print(f"\n{'embedding':10s} {'n':>2s} {'auc':>16s} {'gauc':>16s} {'logloss':>16s}")
    table = summarize(rows, ["embedding"], METRICS)
    add_pm(table, METRICS)
    for t in table:
        print(f"{t['embedding']:10s} {t['n']:2d} " + " ".join(f"{t[k]:>16s}" for k in METRICS))


if __name__ == "__main__":
    raise SystemExit(main())
