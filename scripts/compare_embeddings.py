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
import tempfile
from functools import partial
from pathlib import Path

import yaml
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ResembError
from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.task import CTRTask

EMBEDDINGS = {
    "plain": lambda a: partial(PlainEmbedding),
    "avg": lambda a: partial(ResEmbedding, conv=MeanConv, residual_l2=a.residual_l2),
    "gcn": lambda a: partial(ResEmbedding, conv=GCNNormConv, residual_l2=a.residual_l2),
    "att": lambda a: partial(ResEmbedding, conv=DotAttentionConv, residual_l2=a.residual_l2),
}


def run(dm: CTRDataModule, embedding: str, seed: int, args: argparse.Namespace) -> dict:
    seed_everything(seed, verbose=False)
    task = CTRTask(dm.num_items, dm.num_categories, args.embedding_dim,
                   embedding=EMBEDDINGS[embedding](args),
                   optimizer=partial(__import__("torch").optim.Adam, lr=args.lr))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ModelCheckpoint(dirpath=tmp, monitor="val/auc", mode="max")
        trainer = Trainer(max_epochs=args.epochs, logger=False, callbacks=[ckpt],
                          enable_progress_bar=False, enable_model_summary=False,
                          deterministic=True)
        trainer.fit(task, datamodule=dm)
        (result,) = trainer.test(task, datamodule=dm, ckpt_path="best", verbose=False)
    return {"embedding": embedding, "seed": seed,
            **{k: round(result[f"test/{k}"], 6) for k in ("auc", "gauc", "logloss")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a data config (contents of the data group)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS), choices=list(EMBEDDINGS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--embedding-dim", type=int, default=18)
    p.add_argument("--residual-l2", type=float, default=0.006)
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    args = p.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        config = yaml.safe_load(Path(args.data).read_text()) or {}
        dm = CTRDataModule(**config)
        rows = []
        for seed in args.seeds:
            for name in args.embeddings:
                rows.append(run(dm, name, seed, args))
                print(f"{name:6s} seed={seed} " + " ".join(
                    f"{k}={rows[-1][k]:.4f}" for k in ("auc", "gauc", "logloss")), flush=True)
    except (ResembError, OSError, TypeError) as err:
        print(f"compare_embeddings: error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["embedding", "seed", "auc", "gauc", "logloss"])
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    """Mean ± std over seeds of each metric, per embedding."""
    import numpy as np

    print(f"\n{'embedding':10s} {'n':>2s} {'auc':>16s} {'gauc':>16s} {'logloss':>16s}")
    for name in dict.fromkeys(r["embedding"] for r in rows):
        sel = [r for r in rows if r["embedding"] == name]
        cells = []
        for k in ("auc", "gauc", "logloss"):
            v = np.array([r[k] for r in sel])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        print(f"{name:10s} {len(sel):2d} " + " ".join(f"{c:>16s}" for c in cells))


if __name__ == "__main__":
    raise SystemExit(main())
