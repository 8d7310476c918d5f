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
from resemb_pl.metrics import rela_impr

#: The test metrics of every run, in the order tables show them.
METRICS = ("auc", "gauc", "logloss")


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


def compare_table(
    rows: list[dict], names: list[str], seeds: list[int], baseline: str | None = ""
) -> list[dict[str, Any]]:
    """Per model, in the order of ``names``: mean ± std over seeds, RelaImpr and wins.

    Args:
        rows: The runs' rows (``model``, ``seed`` and the :data:`METRICS`, numbers or text).
        names: The models.
        seeds: The seeds to count.
        baseline: The model the others are compared with: ``""`` for the first of ``names``,
            ``None`` for none (``rela_impr`` and ``wins`` are ``None`` throughout).

    Returns:
        One dict per model: ``model``, ``n`` (runs), ``<metric>_mean``, ``<metric>_std``,
        ``<metric>`` (``mean ± std`` text), ``rela_impr`` (of the mean AUC against the
        baseline's, in percent; ``None`` for the baseline) and ``wins`` (seeds, among those both
        ran, where the model's test AUC is above the baseline's; ``None`` for the baseline)
        and ``paired`` (those seeds' count).
    """
    auc = {(r["model"], int(r["seed"])): float(r["auc"]) for r in rows}
    base = names[0] if baseline == "" else baseline
    base_auc = mean_std(r["auc"] for r in rows
                        if r["model"] == base and int(r["seed"]) in seeds)[0]
    table = []
    for name in names:
        sel = [r for r in rows if r["model"] == name and int(r["seed"]) in seeds]
        entry: dict[str, Any] = {"model": name, "n": len(sel)}
        for m in METRICS:
            mean, std = mean_std(r[m] for r in sel)
            entry.update({f"{m}_mean": mean, f"{m}_std": std, m: pm(mean, std)})
        paired = [s for s in seeds if (name, s) in auc and (base, s) in auc]
        entry["paired"] = len(paired)
        if base is None or name == base:
            entry["rela_impr"] = entry["wins"] = None
        else:
            entry["rela_impr"] = rela_impr(entry["auc_mean"], base_auc)
            entry["wins"] = sum(auc[(name, s)] > auc[(base, s)] for s in paired)
        table.append(entry)
    return table


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Save a Matplotlib figure atomically in the format of ``path``'s suffix, then close it."""
    import matplotlib.pyplot as plt

    with atomic_open(path) as fh:
        fig.savefig(fh, format=path.suffix[1:], dpi=dpi)
    plt.close(fig)
