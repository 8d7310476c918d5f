"""Table 3: AUC, GAUC and logloss of backbones x embeddings over seeds, with RelaImpr.

    python scripts/table3.py --data configs/data/synthetic_small.yaml \
        --backbones din mlp pnn --embeddings plain avg gcn att --seeds 0 1 2 3 4 --epochs 5

Writes ``reports/table3/<dataset>/``: ``results.csv`` (one row per run, appended as each run
finishes; a rerun skips finished runs), ``table3.csv`` and ``table3.md`` (mean ± std over seeds,
RelaImpr of the mean AUC against the plain embedding of the same backbone and the seeds where the
test AUC beats it: the table of ``resemb-pl compare``, per backbone) and ``command.txt``.
"""

from __future__ import annotations

import argparse

from resemb_pl.experiments import (
    EMBEDDINGS,
    METRICS,
    cell_model,
    check_names,
    compare_table,
    fit_and_test,
    run_script,
    script_parser,
    setup,
    write_table,
)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=5)
    p.add_argument("--backbones", nargs="+", default=["din"])
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    return run_script("table3", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    check_names(backbones=args.backbones, embeddings=args.embeddings)
    s = setup(args, "table3")
    grid = s.grid(drop=["backbone"])
    cells = [{"backbone": b, "embedding": e, "seed": seed}
             for b in args.backbones for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                            log_dir=s.log_dir(cell))

    rows = grid.run(cells, train)
    # Per backbone, the table of `resemb-pl compare` with the plain embedding as baseline.
    baseline = "plain" if "plain" in args.embeddings else None
    table = []
    for backbone in args.backbones:
        sel = [{**r, "model": r["embedding"]} for r in rows if r["backbone"] == backbone]
        for t in compare_table(sel, args.embeddings, args.seeds, baseline=baseline):
            plain = t["model"] == baseline
            table.append({
                "backbone": backbone, "embedding": t["model"], **t,
                "rela_impr_%": "+0.00" if plain else "n/a" if baseline is None
                else f"{t['rela_impr']:+.2f}",
                "wins": "–" if plain else "n/a" if baseline is None
                else f"{t['wins']}/{t['paired']}",
            })
    write_table(s.out_dir / "table3", table,
                ["backbone", "embedding", "n", *METRICS, "rela_impr_%", "wins"],
                f"Table 3 on {s.dataset}: test metrics, mean ± std over seeds; "
                "RelaImpr of the mean AUC vs the plain embedding of the same backbone; wins: "
                "seeds where the test AUC beats that plain embedding's")
    print((s.out_dir / "table3.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
