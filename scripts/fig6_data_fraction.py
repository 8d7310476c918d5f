"""Fig. 6: test AUC against the fraction of training users, for each embedding.

    python scripts/fig6_data_fraction.py --data configs/data/synthetic_small.yaml \
        --fractions 0.1 0.2 0.3 0.5 0.7 0.9 1.0 --embeddings plain att --seeds 0 1 2

Each run keeps a random fraction of the training users (drawn with the run's seed) with all
their training samples, and rebuilds the interest graph from exactly their training sequences
(:meth:`resemb_pl.data.product.ProcessedData.restrict_training_users`, under the DIN and the
MovieLens protocol alike), so the res-embedding sees no more data than the plain one.
Validation and test data are unchanged.
Writes ``reports/fig6/<dataset>/``: ``results.csv``, ``fig6.csv`` / ``fig6.md`` (mean ± std AUC
per fraction and embedding), ``fig6.png`` and ``command.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from resemb_pl.errors import ConfigError  # noqa: E402
from resemb_pl.experiments import (  # noqa: E402
    EMBEDDINGS,
    METRICS,
    add_pm,
    cell_model,
    check_names,
    fit_and_test,
    run_script,
    save_figure,
    script_parser,
    setup,
    summarize,
    write_table,
)

FRACTIONS = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=3)
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    p.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    return run_script("fig6_data_fraction", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    check_names(embeddings=args.embeddings)
    bad = [f for f in args.fractions if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"--fractions: each must lie in (0, 1], got {bad}")
    s = setup(args, "fig6")
    grid = s.grid()
    cells = [{"embedding": e, "fraction": f, "seed": seed}
             for e in args.embeddings for f in args.fractions for seed in args.seeds]

    def train(cell: dict) -> dict:
        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                            train_user_fraction=cell["fraction"])

    rows = grid.run(cells, train)
    table = summarize(rows, ["embedding", "fraction"], METRICS)
    add_pm(table, METRICS)
    write_table(s.out_dir / "fig6", table, ["embedding", "fraction", "n", *METRICS],
                f"Fig. 6 on {s.dataset}: test metrics against the fraction of training users "
                "(mean ± std over seeds)")
    plot(table, s.out_dir / "fig6.png", s.dataset)
    print((s.out_dir / "fig6.md").read_text())


def plot(table: list[dict], path: Path, dataset: str) -> None:
    """AUC (± std) against the percentage of training users, one line per embedding."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(t["embedding"] for t in table):
        sel = sorted((t for t in table if t["embedding"] == name),
                     key=lambda t: float(t["fraction"]))
        x = [100 * float(t["fraction"]) for t in sel]
        ax.errorbar(x, [t["auc_mean"] for t in sel], yerr=[t["auc_std"] for t in sel],
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("training users used (%)")
    ax.set_ylabel("test AUC")
    ax.set_title(f"Fig. 6: AUC against the amount of training data ({dataset})")
    ax.legend(title="embedding")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
