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
    Grid,
    add_common_args,
    embedding_spec,
    fit_and_test,
    model_spec,
    parse,
    pm,
    script_main,
    setup,
    summarize,
    write_table,
)

COLUMNS = ("auc", "r_max", "r_mean", "r_all", "r_ratio", "res_ratio")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, seeds=3)
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    args = parse(p, argv)
    return script_main("theorem1_radius", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    for name in args.embeddings:
        embedding_spec(name)
    s = setup(args, "theorem1")
    grid = Grid(s.out_dir, s.settings)
    cells = [{"embedding": e, "seed": seed} for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        model = model_spec(args.backbone, cell["embedding"], embedding_dim=args.embedding_dim,
                           lr=args.lr, residual_l2=args.residual_l2)
        log_dir = s.out_dir / "tb" / f"{cell['embedding']}_seed{cell['seed']}"
        return fit_and_test(s.data, model, cell["seed"], s.budget,
                            log_dir=log_dir if args.tensorboard else None)

    rows = grid.run(cells, train)
    table = summarize(rows, ["embedding"], COLUMNS)
    for t in table:
        for m in COLUMNS:
            t[m] = "" if t[f"{m}_mean"] != t[f"{m}_mean"] else pm(t[f"{m}_mean"], t[f"{m}_std"])
    write_table(s.out_dir / "theorem1", table, ["embedding", "n", *COLUMNS],
                f"Theorem 1 on {s.dataset}: envelope radii of the clicked items' embeddings by "
                "domain (r_ratio = mean domain radius / all-item radius), mean ± std over seeds")
    print((s.out_dir / "theorem1.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
