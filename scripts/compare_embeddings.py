"""Train one backbone with the plain embedding and each res-embedding; report test metrics.

    python scripts/compare_embeddings.py --data configs/data/synthetic_small.yaml \
        --seeds 0 1 2 --out reports/compare/small.csv

Every run uses the same data (the data config's seed) and the same trainer budget; the seed of
a run seeds the model initialisation and the batch order. The model evaluated on the test set is
the epoch with the best validation AUC. Writes a CSV with ``embedding,seed,auc,gauc,logloss``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ResembError
from resemb_pl.experiments import (
    EMBEDDINGS,
    METRICS,
    Budget,
    fit_and_test,
    load_data_config,
    model_spec,
    pm,
)

FIELDS = ["embedding", "seed", *METRICS]


def run(data: dict, embedding: str, seed: int, args: argparse.Namespace) -> dict:
    """Train DIN with ``embedding``; the test metrics of its epoch with the best val AUC."""
    model = model_spec("din", embedding, embedding_dim=args.embedding_dim, lr=args.lr,
                       residual_l2=args.residual_l2)
    budget = Budget(max_epochs=args.epochs, accelerator=args.accelerator)
    result = fit_and_test(data, model, seed, budget,
                          deterministic=True if args.accelerator == "cpu" else "warn")
    return {"embedding": embedding, "seed": seed, **{k: round(result[k], 6) for k in METRICS}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        data = load_data_config(args.data)
        CTRDataModule(**data)  # a bad data config fails here, before the CSV is opened
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        with open(args.out, "w", newline="") as fh:  # one row per finished run
            writer = csv.DictWriter(fh, FIELDS)
            writer.writeheader()
            for seed in args.seeds:
                for name in args.embeddings:
                    rows.append(run(data, name, seed, args))
                    writer.writerow(rows[-1])
                    fh.flush()
                    print(f"{name:6s} seed={seed} " + " ".join(
                        f"{k}={rows[-1][k]:.4f}" for k in METRICS), flush=True)
    except (ResembError, OSError, TypeError) as err:
        print(f"compare_embeddings: error: {err}", file=sys.stderr)
        return 2
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    """Mean ± std over seeds of each metric, per embedding."""
    print(f"\n{'embedding':10s} {'n':>2s} {'auc':>16s} {'gauc':>16s} {'logloss':>16s}")
    for name in dict.fromkeys(r["embedding"] for r in rows):
        sel = [r for r in rows if r["embedding"] == name]
        cells = [pm(v.mean(), v.std()) for v in (np.array([r[k] for r in sel]) for k in METRICS)]
        print(f"{name:10s} {len(sel):2d} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    raise SystemExit(main())
