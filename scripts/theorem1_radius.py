"""Theorem 1: the envelope radius of same-domain items, per embedding, measured after training.

    python scripts/theorem1_radius.py --data configs/data/synthetic_small.yaml \
        --embeddings plain avg gcn att --seeds 0 1 2

For the best model of each run, over the items clicked in training: ``r_max`` (the largest
domain radius), ``r_mean`` (the mean domain radius), ``r_all`` (the radius of all items) and
``r_ratio = r_mean / r_all``, the scale-free tightness that the theorem says res-embedding
shrinks; ``res_ratio`` is the measured ``||R|| / ||W·Cb||`` of a res-embedding. Domains are the
true interest domains on synthetic data and the categories on real data. Writes
``reports/theorem1/<dataset>/``: ``results.csv``, ``theorem1.csv`` / ``theorem1.md`` (mean ± std)
and ``command.txt``. The same metrics are logged as ``val/r_max`` and ``val/r_ratio`` at every
validation of any run with :class:`resemb_pl.callbacks.EmbeddingMonitor` (``--tensorboard``).
"""

from __future__ import annotations

import argparse

from resemb_pl.experiments import (
    EMBEDDINGS,
    add_pm,
    cell_model,
    check_names,
    fit_and_test,
    run_script,
    script_parser,
    setup,
    summarize,
    write_table,
)

COLUMNS = ("auc", "r_max", "r_mean", "r_all", "r_ratio", "res_ratio")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=3)
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    return run_script("theorem1_radius", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    check_names(embeddings=args.embeddings)
    s = setup(args, "theorem1")
    grid = s.grid()
    cells = [{"embedding": e, "seed": seed} for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                            log_dir=s.log_dir(cell))

    rows = grid.run(cells, train)
    table = summarize(rows, ["embedding"], COLUMNS)
    add_pm(table, COLUMNS, blank_nan=True)
    write_table(s.out_dir / "theorem1", table, ["embedding", "n", *COLUMNS],
                f"Theorem 1 on {s.dataset}: envelope radii of the clicked items' embeddings by "
                "domain (r_ratio = mean domain radius / all-item radius), mean ± std over seeds")
    print((s.out_dir / "theorem1.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
