"""Fig. 5: train and validation loss curves of the plain embedding and the res-embedding.

    python scripts/fig5_overfitting.py --data configs/data/synthetic_small.yaml \
        --embeddings plain att --seeds 0 1 2 --epochs 10 --val-check-interval 0.25

Validation runs every ``--val-check-interval`` of an epoch; at each, the mean training
cross-entropy since the previous validation (``train/bce``, without the regulariser) and the
validation logloss are recorded on the optimizer-step scale. Writes ``reports/fig5/<dataset>/``:
``results.csv`` (test metrics per run), ``curves/<run>.csv``, ``fig5.png`` (mean over seeds),
``fig5.csv`` / ``fig5.md`` (best and final validation loss, and their gap: the overfitting) and
``command.txt``. With ``--tensorboard`` the runs' ``train/bce`` and ``val/logloss`` scalars (one
CUSTOM SCALARS chart) and their loss figure go to ``tb/``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from resemb_pl.atomic import atomic_open  # noqa: E402
from resemb_pl.callbacks import LossCurves  # noqa: E402
from resemb_pl.experiments import (  # noqa: E402
    EMBEDDINGS,
    cell_id,
    cell_model,
    check_names,
    fit_and_test,
    mean_std,
    pm,
    run_script,
    save_figure,
    script_parser,
    setup,
    write_table,
)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=3, epochs=10)
    p.add_argument("--embeddings", nargs="+", default=["plain", "att"], choices=list(EMBEDDINGS))
    p.add_argument("--val-check-interval", type=float, default=0.25,
                   help="validate every this fraction of an epoch")
    return run_script("fig5_overfitting", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    check_names(embeddings=args.embeddings)
    s = setup(args, "fig5", val_check_interval=args.val_check_interval)
    grid = s.grid()
    curves_dir = s.out_dir / "curves"
    curves_dir.mkdir(exist_ok=True)
    cells = [{"embedding": e, "seed": seed} for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        curves = LossCurves()
        row = fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                           callbacks=[curves], log_dir=s.log_dir(cell))
        write_curve(curves_dir / f"{cell_id(cell)}.csv", curves.history)
        return row

    grid.run(cells, train)
    curves = {e: [read_curve(curves_dir / f"{cell_id({'embedding': e, 'seed': seed})}.csv")
                  for seed in args.seeds] for e in args.embeddings}
    table = plot(curves, s.out_dir / "fig5.png", s.dataset)
    write_table(s.out_dir / "fig5", table,
                ["embedding", "n", "best_val_loss", "best_step", "final_val_loss",
                 "final_train_loss", "overfit_gap"],
                f"Fig. 5 on {s.dataset}: validation loss, mean ± std over seeds "
                "(overfit_gap = final − best validation loss)")
    print((s.out_dir / "fig5.md").read_text())


def write_curve(path: Path, history: list[dict]) -> None:
    """Write a run's :class:`LossCurves` history as CSV."""
    with atomic_open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["step", "epoch", "train_loss", "val_loss"])
        writer.writeheader()
        writer.writerows(history)


def read_curve(path: Path) -> dict[str, np.ndarray]:
    """Read a curve CSV back as arrays of ``step``, ``train_loss`` and ``val_loss``."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("step", "train_loss", "val_loss")}


def plot(curves: dict[str, list[dict]], path: Path, dataset: str) -> list[dict]:
    """Mean curves over seeds (shaded ± std) and the per-embedding summary rows."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    table = []
    for i, (name, runs) in enumerate(curves.items()):
        n = min(len(r["step"]) for r in runs)
        step = runs[0]["step"][:n]
        color = f"C{i}"
        for key, style, label in (("train_loss", "-", "train"), ("val_loss", "--", "validation")):
            v = np.stack([r[key][:n] for r in runs])
            ax.plot(step, v.mean(0), style, color=color, label=f"{name} {label}")
            if len(runs) > 1:
                ax.fill_between(step, v.mean(0) - v.std(0), v.mean(0) + v.std(0), color=color,
                                alpha=0.15)
        best = [float(r["val_loss"][:n].min()) for r in runs]
        final = [float(r["val_loss"][n - 1]) for r in runs]
        table.append({
            "embedding": name, "n": len(runs),
            "best_val_loss": pm(*mean_std(best)),
            "best_step": int(np.median([r["step"][int(r["val_loss"][:n].argmin())] for r in runs])),
            "final_val_loss": pm(*mean_std(final)),
            "final_train_loss": pm(*mean_std(float(r["train_loss"][n - 1]) for r in runs)),
            "overfit_gap": pm(*mean_std(np.subtract(final, best))),
        })
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(f"Fig. 5: train and validation loss ({dataset})")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return table


if __name__ == "__main__":
    raise SystemExit(main())
