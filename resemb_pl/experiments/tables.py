"""Tables of a grid's rows: mean ± std per group, written as CSV and Markdown.

Example::

    table = summarize(grid_rows, ["embedding"], METRICS)
    add_pm(table, METRICS)
    write_table(out_dir / "table3", table, ["embedding", "n", *METRICS], "Table 3")
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from resemb_pl.atomic import atomic_open


def csv_value(value: Any) -> Any:
    """A float as text with 6 significant digits (as the CSVs hold it); other values as is."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# -- tables ---------------------------------------------------------------------------------
def mean_std(values: Iterable[float | str]) -> tuple[float, float]:
    """Mean and (population) standard deviation, ignoring empty and NaN entries."""
    v = np.array([float(x) for x in values if x not in ("", None)], dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def summarize(
    rows: list[dict], by: list[str], metrics: Iterable[str]
) -> list[dict[str, Any]]:
    """Group ``rows`` by the columns ``by``; mean, std and count of each metric per group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, sel in groups.items():
        entry: dict[str, Any] = dict(zip(by, key, strict=True))
        entry["n"] = len(sel)
        for m in metrics:
            entry[f"{m}_mean"], entry[f"{m}_std"] = mean_std(r.get(m, "") for r in sel)
        out.append(entry)
    return out


def write_table(path: Path, rows: list[dict], columns: list[str], title: str) -> None:
    """Write ``rows`` as ``<path>.csv`` and a Markdown table ``<path>.md`` (with ``title``)."""
    with atomic_open(path.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: csv_value(v) for k, v in r.items()} for r in rows)
    md = [f"# {title}", "", "| " + " | ".join(columns) + " |",
          "|" + "|".join("---" for _ in columns) + "|"]
    md += ["| " + " | ".join(_cell_text(r.get(c, "")) for c in columns) + " |" for r in rows]
    with atomic_open(path.with_suffix(".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")


def _cell_text(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def pm(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std`` as text."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def add_pm(table: list[dict], metrics: Iterable[str], *, blank_nan: bool = False) -> None:
    """Set ``row[m]`` to :func:`pm` of ``row[m_mean]`` and ``row[m_std]`` in every row of ``table``.

    Args:
        table: Rows of :func:`summarize`.
        metrics: The metrics to format.
        blank_nan: Leave ``row[m]`` empty where the mean is NaN (no run measured ``m``).
    """
    for row in table:
        for m in metrics:
            mean = row[f"{m}_mean"]
            row[m] = "" if blank_nan and mean != mean else pm(mean, row[f"{m}_std"])


