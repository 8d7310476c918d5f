"""Readers of the official data formats and of canonical tables; all return :class:`Interactions`.

- :func:`read_amazon`: McAuley 2014 ``reviews_<Category>_5.json(.gz)`` and
  ``meta_<Category>.json(.gz)``.
- :func:`read_movielens`: a MovieLens folder (ML-100K, ML-1M or ML-20M/latest layout), in
  :mod:`resemb_pl.data.movielens`.
- :func:`read_interactions`: any parquet or csv table, e.g. the processed shared folders.
- :func:`read_source`: dispatch on a kind name, for configs.

Every problem with the input is reported as a one-line :class:`DataError` naming the file and,
where it applies, the line, row or column.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from resemb_pl.data.files import RATING_COLUMNS as _RATING_COLUMNS
from resemb_pl.data.files import existing as _existing
from resemb_pl.data.files import one_line as _one_line
from resemb_pl.data.files import reading as _reading
from resemb_pl.data.interactions import (
    Interactions,
    canonicalize,
    check_scalar_column,
    normalize_ids,
    time_values,
)
from resemb_pl.data.movielens import read_movielens
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = ("user_id", "item_id", "category_id", "timestamp", "rating")
# A meta line that starts with its asin, as McAuley's files do.
_LEADING_ASIN = re.compile(r"""\{\s*(['"])asin\1:\s*(['"])([^'"\\]*)\2""")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(allowed)}")


def _records(
    path: Path, parse: Callable[[str], object], on_bad_line: str, what: str
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, dict)`` for each non-blank line of a (gzipped) text file.

    A line that ``parse`` rejects, or that is not a dict, raises or is skipped (and counted in
    a warning) according to ``on_bad_line``.
    """
    bad = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    with _reading(path), opener(path, "rt", encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = parse(line.strip())
            except (ValueError, SyntaxError, RecursionError) as exc:
                record = exc
            if isinstance(record, dict):
                yield lineno, record
            elif on_bad_line == "skip":
                bad += 1
            else:
                reason = _one_line(record) if isinstance(record, Exception) else "not a dict"
                raise DataError(f"{path}: line {lineno} is not a valid {what} ({reason})")
    if bad:
        log.warning("%s: skipped %d malformed line(s)", path, bad)


def _parse_literal(line: str) -> object:
    """A Python-literal line (``ast.literal_eval``, never ``eval``), or else a strict JSON one."""
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError) as exc:
        try:
            return json.loads(line)
        except ValueError:
            raise exc from None


def _amazon_categories(
    path: Path, asins: set, on_bad_line: str, category_path: str
) -> dict[str, str | None]:
    """Category of each wanted item: the last entry of its last (or first) category path.

    DIN's ``2_remap_id.py`` does ``meta_df['categories'].map(lambda x: x[-1][-1])`` (the last
    path), which gives its 801 Electronics categories; ``category_path="first"`` takes the last
    entry of the first path instead, as DIN's paper text and DESIGN.md describe it. Items with no category path get ``None`` (unknown). Lines
    of other items are skipped unparsed when they start with their asin, so a malformed line
    there goes unnoticed.
    """

    def parse(line: str) -> object:
        # Most of a meta file is items the reviews do not use: those lines are not parsed.
        head = _LEADING_ASIN.match(line)
        return {"asin": None} if head and head[3] not in asins else _parse_literal(line)

    out: dict[str, str | None] = {}
    for lineno, record in _records(path, parse, on_bad_line, "Python literal"):
        if "asin" not in record:
            raise DataError(f"{path}: line {lineno} has no key 'asin'")
        if record["asin"] not in asins:
            continue
        paths = record.get("categories") or []
        if not isinstance(paths, list) or not all(isinstance(p, list) for p in paths):
            raise DataError(f"{path}: line {lineno}: 'categories' is not a list of category paths")
        chosen = paths[-1 if category_path == "last" else 0] if paths else None
        out[record["asin"]] = str(chosen[-1]) if chosen else None
    return out


def read_amazon(
    reviews_path: str | Path,
    meta_path: str | Path | None = None,
    *,
    on_bad_line: Literal["error", "skip"] = "error",
    category_path: Literal["last", "first"] = "last",
) -> Interactions:
    """Read McAuley's 2014 Amazon reviews, with categories from the metadata file if given.

    Args:
        reviews_path: ``reviews_<Category>_5.json`` or ``.json.gz``: one JSON object per line
            with ``reviewerID``, ``asin``, ``overall`` (rating) and ``unixReviewTime``.
        meta_path: Optional ``meta_<Category>.json(.gz)``: one Python-literal dict per line
            (strict JSON also accepted) with ``asin`` and ``categories``. The category of an
            item is the last entry of its last category path, as in DIN; items without
            metadata or categories get category 0 (unknown).
        on_bad_line: ``"error"`` raises on a line that does not parse; ``"skip"`` skips such
            lines and logs how many were skipped.
        category_path: ``"last"`` (DIN's code: ``categories[-1][-1]``) or ``"first"``
            (``categories[0][-1]``): which category path gives the item's category.

    Raises:
        DataError: On a missing or unreadable file, a bad line (with ``on_bad_line="error"``)
            or a record without a required key.
        ConfigError: On an unknown ``on_bad_line``.
    """
    _choice("on_bad_line", on_bad_line, ("error", "skip"))
    _choice("category_path", category_path, ("last", "first"))
    reviews_path = _existing(reviews_path)
    rows = []
    for lineno, r in _records(reviews_path, json.loads, on_bad_line, "JSON object"):
        try:
            rows.append((r["reviewerID"], r["asin"], r["overall"], r["unixReviewTime"]))
        except KeyError as exc:
            raise DataError(f"{reviews_path}: line {lineno} has no key {exc.args[0]!r}") from None
    frame = pd.DataFrame(rows, columns=_RATING_COLUMNS)
    frame["category"] = None
    if meta_path is not None:
        categories = _amazon_categories(
            _existing(meta_path), set(frame["item"]), on_bad_line, category_path
        )
        frame["category"] = frame["item"].map(categories)
    return canonicalize(
        frame, user="user", item="item", category="category", source=str(reviews_path)
    )


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix not in (".parquet", ".csv"):
        raise DataError(f"{path}: not a parquet or csv file")
    with _reading(path):
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _id_keys(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """The ids of ``column`` as the strings that training and requests match them by."""
    ids, valid = normalize_ids(frame[column], source=source, column=column)
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise DataError(f"{source}: column {column!r} has a missing value at row {row}")
    return ids.astype(str)


def _item_categories(items_path: Path, item: str, category: str) -> tuple[pd.Series, dict | None]:
    """Category of each item from an item table, and its ``category_name`` column if any."""
    items = _read_table(items_path)
    missing = [c for c in (item, category) if c not in items.columns]
    if missing:
        raise DataError(f"{items_path}: missing column(s) {', '.join(map(repr, missing))}")
    keys = _id_keys(items, item, str(items_path))
    repeated = np.flatnonzero(pd.Series(keys).duplicated().to_numpy())
    if len(repeated):
        row = repeated[0]
        raise DataError(f"{items_path}: row {row} repeats item {items[item].iloc[row]}")
    mapping = pd.Series(items[category].to_numpy(), index=keys, dtype=object)
    names = None
    if "category_name" in items.columns:
        names = dict(zip(items[category], items["category_name"], strict=True))
    return mapping, names


def _mapped(missing: list[str], columns: dict[str, str]) -> str:
    """``'uid' (data.columns.user_id)``: each missing column with the key that names it."""
    role = {name: key for key, name in columns.items()}
    out = []
    for name in missing:
        key = role.get(name, name if name in CANONICAL_COLUMNS else None)
        how = f"data.columns.{key}" if name in role else f"map it with data.columns.{key}"
        out.append(f"{name!r} ({how})" if key else repr(name))
    return ", ".join(out)


def read_interactions(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    items_path: str | Path | None = None,
    duplicates: Literal["error", "drop"] = "drop",
) -> Interactions:
    """Read an events table from a parquet or csv file (or a folder with ``interactions.parquet``).

    The time column is ``timestamp``, or ``seq_pos`` in files that only keep the order. Every
    category value found in the file is a real category (the shared folders use raw category
    0 for real genres); only missing values, and tables without a category column, give
    category 0 (unknown).

    Args:
        path: A ``.parquet`` or ``.csv`` file, or a folder holding ``interactions.parquet``.
        columns: Maps canonical names (``user_id``, ``item_id``, ``category_id``,
            ``timestamp``, ``rating``) to the file's column names, where they differ.
        items_path: Optional item table (parquet or csv) with the item and category columns;
            its categories replace those of the events, and its ``category_name`` column, if
            any, names them.
        duplicates: What to do with events repeating an earlier (user, item, time) event:
            ``"drop"`` drops them and logs how many, ``"error"`` raises.

    Raises:
        DataError: On a missing, unreadable or unsupported file, a missing column, a missing
            value, a negative numeric id or (with ``duplicates="error"``) a repeated event.
        ConfigError: On an unknown canonical name in ``columns`` or an unknown ``duplicates``.
    """
    _choice("duplicates", duplicates, ("error", "drop"))
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(CANONICAL_COLUMNS))
    if unknown:
        expected = ", ".join(CANONICAL_COLUMNS)
        raise ConfigError(
            f"data.columns: unknown name(s) {', '.join(unknown)}; expected {expected}"
        )
    path = _existing(path)
    if path.is_dir():
        if not (path / "interactions.parquet").is_file():
            raise DataError(f"{path}: folder has no interactions.parquet")
        path = path / "interactions.parquet"
    frame = _read_table(path)
    source = str(path)

    user = columns.get("user_id", "user_id")
    item = columns.get("item_id", "item_id")
    time = columns.get("timestamp", "timestamp")
    if "timestamp" not in columns and time not in frame.columns and "seq_pos" in frame.columns:
        time = "seq_pos"
    category = columns.get("category_id", "category_id")
    needed = [user, item, time, *columns.values()]
    if items_path is not None and "category_id" in columns:
        needed.remove(category)  # it is a column of the item table
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {_mapped(missing, columns)}; the "
                        f"columns are {', '.join(map(str, frame.columns))}")

    for col in dict.fromkeys([user, item, time, *columns.values()]):
        if col in frame.columns:
            check_scalar_column(frame, col, source)  # before anything hashes the values
    for col in (user, item):
        if pd.api.types.is_numeric_dtype(frame[col]):
            negative = np.flatnonzero(frame[col].lt(0).to_numpy(dtype=bool, na_value=False))
            if len(negative):
                raise DataError(f"{source}: column {col!r} has a negative id at row {negative[0]}")
        missing_id = np.flatnonzero(frame[col].isna().to_numpy())
        if len(missing_id):  # here, so that the row is the file's, before duplicates go
            raise DataError(f"{source}: column {col!r} has a missing value at row {missing_id[0]}")
    time_values(frame[time], source=source, column=time)  # likewise: checked in file rows
    repeated = frame.duplicated([user, item, time]).to_numpy()
    if repeated.any():
        if duplicates == "error":
            row = int(np.flatnonzero(repeated)[0])
            key = f"({user}, {item}, {time})"
            raise DataError(f"{source}: row {row} repeats an earlier {key} event")
        log.warning("%s: dropped %d duplicate event(s)", source, int(repeated.sum()))
        frame = frame[~repeated].reset_index(drop=True)

    names = None
    if items_path is not None:
        mapping, names = _item_categories(_existing(items_path), item, category)
        ids, valid = normalize_ids(frame[item], source=source, column=item)
        found = np.full(len(frame), None, dtype=object)  # a missing id is reported later
        found[valid] = mapping.reindex(ids.astype(str)).to_numpy()
        frame = frame.assign(**{category: found})
    elif category not in frame.columns:
        category = None
    return canonicalize(
        frame,
        user=user,
        item=item,
        category=category,
        timestamp=time,
        rating=columns.get("rating", "rating"),
        source=source,
        category_names=names,
    )


def read_source(kind: str, path: str | Path, **kwargs: Any) -> Interactions:
    """Read ``path`` with the reader named by ``kind``: amazon, movielens or interactions.

    For ``amazon``, ``path`` is the reviews file and ``meta_path`` may be passed as a keyword.
    Other keywords go to the reader.

    Raises:
        ConfigError: On an unknown kind.
    """
    readers = {
        "amazon": read_amazon,
        "movielens": read_movielens,
        "interactions": read_interactions,
    }
    _choice("kind", kind, tuple(readers))
    return readers[kind](path, **kwargs)
