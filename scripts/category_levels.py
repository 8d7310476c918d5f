"""Item tables with coarser or no categories, for the Sports ablations of issue 18.

    python scripts/category_levels.py --data ../shared/data/amazon-sports-5core-seq \
        --out .cache/ablation/sports_items.parquet

The shared Amazon folders (S3-Rec preprocessing) keep, per item, ``attribute_ids``: the brand
first, then the category path from the root of the store ("Sports & Outdoors") down to the leaf,
which is ``category_id`` (checked: the last attribute is the category for every item). This
writes one table with ``item_id`` and a category column per level, to pass to a run as
``--data.meta_path <out> --data.columns '{category_id: <column>}'``:

- ``category_leaf``: the folder's own category (what runs use by default);
- ``category_top``: the path's entry ``--depth`` below the brand (default 2: the top-level
  department under the store's root; an item with a shorter path keeps its last entry);
- ``category_none``: one category for every item, i.e. no category information.

The table is derived from the shared data, so it goes under ``.cache/`` (not committed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resemb_pl.atomic import atomic_write  # noqa: E402
from resemb_pl.boundary import ArgumentParser, command_boundary  # noqa: E402
from resemb_pl.errors import DataError  # noqa: E402


def levels(items: pd.DataFrame, depth: int) -> pd.DataFrame:
    """``item_id`` and the ``category_leaf`` / ``category_top`` / ``category_none`` columns."""
    paths = items["attribute_ids"].map(list)
    if not (paths.map(lambda p: p[-1] if len(p) else None) == items["category_id"]).all():
        raise DataError("attribute_ids: the last attribute is not the category of every item; "
                        "not a category path")
    return pd.DataFrame({
        "item_id": items["item_id"],
        "category_leaf": items["category_id"],
        "category_top": paths.map(lambda p: p[min(depth, len(p) - 1)]),
        "category_none": 1,
    })


@command_boundary("category_levels")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="a folder with items.parquet (item_id, category_id, attribute_ids)")
    parser.add_argument("--out", required=True, type=Path, help="the item table to write")
    parser.add_argument("--depth", type=int, default=2, help="attribute index of category_top")
    args = parser.parse_args(argv)
    if args.depth < 1:
        parser.error(f"--depth: must be >= 1 (0 is the brand), got {args.depth}")
    source = args.data / "items.parquet"
    items = pd.read_parquet(source, columns=["item_id", "category_id", "attribute_ids"])
    table = levels(items, args.depth)
    atomic_write(args.out, lambda fh: table.to_parquet(fh, index=False))
    counts = ", ".join(f"{c} {table[c].nunique()}" for c in table.columns[1:])
    print(f"{args.out}: {len(table)} items; categories: {counts}")


if __name__ == "__main__":
    main()
