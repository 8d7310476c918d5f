"""Fig. 7: t-SNE of the most clicked items' embeddings, coloured by interest domain.

    python scripts/fig7_tsne.py --data configs/data/synthetic_small.yaml \
        --embeddings plain avg gcn att --seeds 0 1 2 --items 1000

Each run saves the embeddings of the ``--items`` most clicked training items of its best model
(``embeddings/<run>.npz``). The picture shows, per embedding, an exact t-SNE of the first seed's
run, coloured by the true interest domain on synthetic data and by the category on real data
(the ``--colors`` most common domains in colour, the rest grey). The table measures what the
picture suggests, over all seeds: the share of each item's 10 nearest neighbours (in the
embedding space) from its own domain, and the envelope radius ratio of these items. Writes
``reports/fig7/<dataset>/``: ``results.csv``, ``fig7.png``, ``fig7.csv`` / ``fig7.md`` and
``command.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from resemb_pl.atomic import atomic_open  # noqa: E402
from resemb_pl.callbacks import item_domains, top_items  # noqa: E402
from resemb_pl.experiments import (  # noqa: E402
    EMBEDDINGS,
    add_pm,
    cell_id,
    cell_model,
    check_names,
    fit_and_test,
    knn_purity,
    run_script,
    save_figure,
    script_parser,
    setup,
    summarize,
    tsne,
    write_table,
)
from resemb_pl.metrics import envelope_radius  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the grid; 2 on a bad input."""
    p = script_parser(__doc__, seeds=3)
    p.add_argument("--embeddings", nargs="+", default=list(EMBEDDINGS))
    p.add_argument("--items", type=int, default=1000, help="most clicked items to show")
    p.add_argument("--colors", type=int, default=10, help="domains drawn in colour")
    p.add_argument("--perplexity", type=float, default=30.0)
    return run_script("fig7_tsne", p, argv, run)


def run(args: argparse.Namespace) -> None:
    """Train the missing cells, then write the table and the figure."""
    check_names(embeddings=args.embeddings)
    s = setup(args, "fig7")
    s.settings["items"] = args.items
    grid = s.grid()
    emb_dir = s.out_dir / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    cells = [{"embedding": e, "seed": seed} for e in args.embeddings for seed in args.seeds]

    def train(cell: dict) -> dict:
        def save(task, dm) -> dict:
            items = top_items(dm, args.items)
            with torch.no_grad():
                task.eval()
                table = task.embedding.item_table()[torch.as_tensor(items, device=task.device)]
            x, domain = table.float().cpu().numpy(), item_domains(dm)[items]
            with atomic_open(emb_dir / f"{cell_id(cell)}.npz") as fh:
                np.savez(fh, items=items, x=x, domain=domain)
            radius = envelope_radius(torch.from_numpy(x), torch.from_numpy(domain))
            return {"knn_purity": knn_purity(x[domain >= 0], domain[domain >= 0]),
                    "top_r_ratio": radius["r_ratio"]}

        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                            on_tested=save)

    rows = grid.run(cells, train)
    table = summarize(rows, ["embedding"], ["auc", "knn_purity", "top_r_ratio"])
    add_pm(table, ["auc", "knn_purity", "top_r_ratio"])
    write_table(s.out_dir / "fig7", table, ["embedding", "n", "auc", "knn_purity", "top_r_ratio"],
                f"Fig. 7 on {s.dataset}: clustering of the {args.items} most clicked items by "
                "domain (10-NN same-domain share; within-domain / all-item radius), mean ± std")
    first = {e: emb_dir / f"{cell_id({'embedding': e, 'seed': args.seeds[0]})}.npz"
             for e in args.embeddings}
    plot(first, s.out_dir / "fig7.png", s.dataset, args)
    print((s.out_dir / "fig7.md").read_text())


def plot(files: dict[str, Path], path: Path, dataset: str, args: argparse.Namespace) -> None:
    """One t-SNE panel per embedding, the most common domains in colour."""
    n = len(files)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 5 * rows), squeeze=False)
    for ax, (name, file) in zip(axes.flat, files.items(), strict=False):
        with np.load(file) as z:
            x, domain = z["x"], z["domain"]
        y = tsne(x, perplexity=args.perplexity, seed=args.seeds[0])
        values, counts = np.unique(domain[domain >= 0], return_counts=True)
        shown = values[np.argsort(-counts, kind="stable")[: args.colors]]
        rest = ~np.isin(domain, shown)
        ax.scatter(y[rest, 0], y[rest, 1], s=4, c="lightgrey", label="other domains")
        for i, d in enumerate(shown):
            sel = domain == d
            ax.scatter(y[sel, 0], y[sel, 1], s=6, color=plt.cm.tab10(i % 10), label=f"domain {d}")
        ax.set_title(f"{name} (seed {args.seeds[0]}, {len(x)} items)")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize="small", markerscale=2)
    fig.suptitle(f"Fig. 7: t-SNE of item embeddings coloured by interest domain ({dataset})")
    fig.tight_layout(rect=(0, 0, 0.85, 0.96))
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
