"""Table 3: AUC, GAUC and logloss of backbones x embeddings over seeds, with RelaImpr.

    python scripts/table3.py --data configs/data/synthetic_small.yaml \
        --backbones din mlp pnn --embeddings plain avg gcn att --seeds 0 1 2 3 4 --epochs 5

Writes ``reports/table3/<dataset>/``: ``results.csv`` (one row per run, appended as each run
finishes; a rerun skips finished runs), ``table3.csv`` and ``table3.md`` (mean ± std over seeds,
RelaImpr of the mean AUC against the plain embedding of the same backbone) and ``command.txt``.
"""

from __future__ import annotations

import argparse

from resemb_pl.experiments import (
    EMBEDDINGS,
    METRICS,
    Grid,
    add_common_args,
    backbone_spec,
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
from resemb_pl.metrics import rela_impr


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, seeds=5)
    p.add_argument("--backbones", nargs="+", default=["din"])
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    args = parse(p, argv)
    return script_main("table3", lambda: run(args))


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    for name in args.backbones:  # fail before any training on a name that does not exist
        backbone_spec(name)
    for name in args.embeddings:
        embedding_spec(name)
    s = setup(args, "table3")
    s.settings.pop("backbone")
    grid = Grid(s.out_dir, s.settings)
    cells = [{"backbone": b, "embedding": e, "seed": seed}
             for b in args.backbones for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        model = model_spec(cell["backbone"], cell["embedding"], embedding_dim=args.embedding_dim,
                           lr=args.lr, residual_l2=args.residual_l2)
        log_dir = s.out_dir / "tb" / f"{cell['backbone']}_{cell['embedding']}_seed{cell['seed']}"
        return fit_and_test(s.data, model, cell["seed"], s.budget,
                            log_dir=log_dir if args.tensorboard else None)

    rows = grid.run(cells, train)
    table = summarize(rows, ["backbone", "embedding"], METRICS)
    base = {t["backbone"]: t["auc_mean"] for t in table if t["embedding"] == "plain"}
    for t in table:
        for m in METRICS:
            t[m] = pm(t[f"{m}_mean"], t[f"{m}_std"])
        b = base.get(t["backbone"])
        t["rela_impr_%"] = f"{rela_impr(t['auc_mean'], b):+.2f}" if b is not None else "n/a"
    write_table(s.out_dir / "table3", table,
                ["backbone", "embedding", "n", *METRICS, "rela_impr_%"],
                f"Table 3 on {s.dataset}: test metrics, mean ± std over seeds; "
                "RelaImpr of the mean AUC vs the plain embedding of the same backbone")
    print((s.out_dir / "table3.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
