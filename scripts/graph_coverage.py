"""How much of each data set's evaluation the item interest graph covers.

    python scripts/graph_coverage.py                          # Beauty, Sports, MovieLens-100K
    python scripts/graph_coverage.py --data configs/data/synthetic_small.yaml --out cov.txt

Res-embedding gives an item with no graph neighbour a zero central part, so its embedding is its
residual alone (eq. 4), and an item never clicked in training has an untrained residual too. For
every data config this prints, from the training graph the data module builds (the leakage rule
of DESIGN.md: no evaluation target in it):

- ``items``, ``edges`` and ``covered``: the catalogue, the graph's edges and the share of items
  with at least one in-neighbour;
- for the positive targets of each split (``train``, ``test``): ``no nbr``, the share whose item
  has no in-neighbour, ``cold``, the share whose item never appears in a training sample
  (target or history), and ``deg``, their items' mean in-degree.

A question of issue "The paper's claim at convergence": does Sports, where res-embedding loses,
have more test targets outside the graph than Beauty, where it wins?
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resemb_pl.atomic import atomic_open  # noqa: E402
from resemb_pl.boundary import ArgumentParser, command_boundary  # noqa: E402
from resemb_pl.data.datamodule import CTRDataModule  # noqa: E402
from resemb_pl.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["amazon_beauty.yaml", "amazon_sports.yaml", "movielens_100k.yaml"]


def coverage(dm: CTRDataModule) -> dict:
    """The coverage figures of one prepared data module (see the module docstring)."""
    graph = dm.graph
    size = dm.num_items + 1
    in_degree = np.bincount(graph.edge_index[1].numpy(), minlength=size)
    train = dm.samples("train")
    seen = np.zeros(size, dtype=bool)
    seen[train.target] = True
    seen[train.seq[train.history_cover() > 0]] = True  # the items of training histories
    row = {"items": dm.num_items, "edges": int(graph.edge_index.size(1)),
           "covered": float((in_degree[1:] > 0).mean())}
    for stage in ("train", "test"):
        samples = dm.samples(stage)
        target = samples.target[samples.label == 1]
        row[stage] = {"targets": int(target.size),
                      "no nbr": float((in_degree[target] == 0).mean()),
                      "cold": float((~seen[target]).mean()),
                      "deg": float(in_degree[target].mean())}
    return row


def load(config: Path) -> CTRDataModule:
    """The data module of a data config, its relative ``path`` taken from the project root."""
    try:
        options = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{config}: not a YAML data config: {err}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"{config}: a data config is a mapping of CTRDataModule options")
    for role in ("path", "meta_path"):
        if options.get(role) and not Path(options[role]).is_absolute():
            options[role] = str((ROOT / options[role]).resolve())
    dm = CTRDataModule(**options)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def format_rows(rows: list[tuple[str, dict]]) -> str:
    lines = ["graph coverage of the evaluation: share of positive targets whose item has no "
             "in-neighbour in the training graph (no nbr), never appears in a training sample "
             "(cold), and their items' mean in-degree (deg)", "",
             f"{'data':<28} {'items':>8} {'edges':>9} {'covered':>8}   "
             f"{'train: no nbr':>13} {'cold':>6} {'deg':>5}   {'test: no nbr':>12} {'cold':>6} "
             f"{'deg':>5}"]
    for name, r in rows:
        tr, te = r["train"], r["test"]
        lines.append(f"{name:<28} {r['items']:>8,} {r['edges']:>9,} {r['covered']:>8.3f}   "
                     f"{tr['no nbr']:>13.3f} {tr['cold']:>6.3f} {tr['deg']:>5.1f}   "
                     f"{te['no nbr']:>12.3f} {te['cold']:>6.3f} {te['deg']:>5.1f}")
    return "\n".join(lines) + "\n"


@command_boundary("graph_coverage")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path,
                        default=[ROOT / "configs" / "data" / name for name in DEFAULT],
                        help="data configs (default: Beauty, Sports, MovieLens-100K)")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    rows = []
    for config in args.data:
        if not config.is_file():
            raise ConfigError(f"{config}: no such data config")
        rows.append((config.stem, coverage(load(config))))
    text = format_rows(rows)
    print(text, end="")
    if args.out:
        with atomic_open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
