"""Fig. 8 and Table 4: the residual-to-central scale against AUC, and 18 vs 36 dimensions.

    python scripts/fig8_residual_scale.py --data configs/data/synthetic_small.yaml \
        --embedding att --residual-l2s 0 0.001 0.006 0.03 0.1 0.3 1 --dims 18 36 --seeds 0 1 2

Fig. 8 sweeps the residual L2 coefficient λ of a res-embedding and plots the test AUC against
the *measured* ratio ``||R|| / ||W·Cb||`` (over the items clicked in training) of the best model
of each run; the plain embedding of the same dimension is the dashed line. Table 4 trains the
plain and the res-embedding at each of ``--dims``: a res-embedding of dimension ``d`` holds two
tables (``Cb`` and ``R``), as many parameters as a plain embedding of ``2d``, so 18 (res) against
36 (plain) is the equal-parameter comparison. Writes ``reports/fig8/<dataset>/``:
``results_sweep.csv``, ``results_dims.csv``, ``fig8.png``, ``fig8.csv`` / ``fig8.md``,
``table4.csv`` / ``table4.md`` and ``command.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from resemb_pl.errors import ConfigError  # noqa: E402
from resemb_pl.experiments import (  # noqa: E402
    CONVS,
    METRICS,
    add_pm,
    cell_model,
    fit_and_test,
    run_script,
    save_figure,
    script_parser,
    setup,
    summarize,
    write_table,
)

LAMBDAS = [0.0, 0.001, 0.006, 0.03, 0.1, 0.3, 1.0]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=3)
    p.add_argument("--embedding", default="att", choices=list(CONVS), help="the res-embedding")
    p.add_argument("--residual-l2s", type=float, nargs="+", default=LAMBDAS)
    p.add_argument("--dims", type=int, nargs="+", default=[18, 36])
    return run_script("fig8_residual_scale", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    if any(v < 0 for v in args.residual_l2s):
        raise ConfigError(f"--residual-l2s: must be >= 0, got {args.residual_l2s}")
    s = setup(args, "fig8")

    def train(cell: dict) -> dict:
        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget)

    dims = s.grid("results_dims", drop=["embedding_dim"])
    dim_rows = dims.run([{"embedding": e, "dim": d, "seed": seed} for d in args.dims
                         for e in ("plain", args.embedding) for seed in args.seeds], train)
    sweep = s.grid("results_sweep", drop=["residual_l2"])
    sweep_rows = sweep.run([{"embedding": args.embedding, "residual_l2": lam, "seed": seed}
                            for lam in args.residual_l2s for seed in args.seeds], train)

    table4 = summarize(dim_rows, ["embedding", "dim"], [*METRICS, "params", "embedding_params"])
    for t in table4:
        t["params"] = int(t["params_mean"])
        t["embedding_params"] = int(t["embedding_params_mean"])
    add_pm(table4, METRICS)
    write_table(s.out_dir / "table4", table4,
                ["embedding", "dim", "n", "embedding_params", "params", *METRICS],
                f"Table 4 on {s.dataset}: embedding dimension and parameters (mean ± std)")
    fig8 = summarize(sweep_rows, ["residual_l2"], ["res_ratio", *METRICS])
    add_pm(fig8, ["res_ratio", *METRICS])
    write_table(s.out_dir / "fig8", fig8, ["residual_l2", "n", "res_ratio", *METRICS],
                f"Fig. 8 on {s.dataset}: {args.embedding} res-embedding, residual L2 λ against "
                "the measured ||R||/||W·Cb|| and test metrics (mean ± std)")
    plain = [t for t in table4 if t["embedding"] == "plain" and int(t["dim"]) == args.embedding_dim]
    plot(fig8, plain[0] if plain else None, s.out_dir / "fig8.png", s.dataset, args.embedding)
    print((s.out_dir / "fig8.md").read_text())
    print((s.out_dir / "table4.md").read_text())


def plot(rows: list[dict], plain: dict | None, path: Path, dataset: str, name: str) -> None:
    """AUC against the measured residual scale, one point per λ, the plain AUC dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, t in enumerate(sorted(rows, key=lambda t: float(t["residual_l2"]))):
        ax.errorbar(t["res_ratio_mean"], t["auc_mean"], xerr=t["res_ratio_std"],
                    yerr=t["auc_std"], marker="o", capsize=3, color=plt.cm.viridis(i / len(rows)),
                    label=f"λ = {float(t['residual_l2']):g}")
    if plain is not None:
        ax.axhline(plain["auc_mean"], color="grey", linestyle="--",
                   label=f"plain, dim {plain['dim']}")
    ax.set_xscale("log")
    ax.set_xlabel("measured ||R|| / ||W·Cb|| (residual to central scale)")
    ax.set_ylabel("test AUC")
    ax.set_title(f"Fig. 8: AUC against the residual scale, {name} ({dataset})")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
