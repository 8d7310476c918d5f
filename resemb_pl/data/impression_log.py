"""Reading impression logs: one row per item shown to a user, with a click label and a time.

:func:`read_impressions` reads only the mapped columns of a parquet or csv file or a folder of
parquet part files (pyarrow datasets, batch by batch), checks them, and factorises the ids into
dense ones, never holding a row as Python objects. :mod:`resemb_pl.data.impressions` makes the
samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: The roles a log's columns can play, and their default column names.
ROLES = ("user_id", "item_id", "label", "timestamp", "category_id")
REQUIRED_ROLES = ("user_id", "item_id", "label")
TimeKind = Literal["number", "datetime", "row"]
_READ_ERRORS = (OSError, ValueError, pa.ArrowException)


class _Progress:
    """Logs one line per step, with its rate; INFO when the step took over a second."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.mark = time.perf_counter()

    def step(self, what: str, count: int, unit: str) -> None:
        now = time.perf_counter()
        took, self.mark = now - self.mark, now
        rate = f"{count / took:,.0f} {unit}/s" if took > 0 else "-"
        log.log(
            logging.INFO if took >= 1.0 else logging.DEBUG,
            "%s: %s %s %s in %.1f s (%s)", self.source, what, f"{count:,}", unit, took, rate,
        )


@dataclass
class ImpressionLog:
    """An impression log with dense ids, as flat arrays in the log's row order.

    Attributes:
        user: Dense user id ``0..U-1`` of every impression.
        item: Dense item id ``1..H`` of every impression.
        label: 1.0 for a click, 0.0 otherwise.
        time: Time of every impression: the column's numbers (``time_kind="number"``),
            nanoseconds since the Unix epoch (``"datetime"``: timestamp, date or ISO-string
            columns) or the row number (``"row"``: no timestamp column).
        time_kind: How ``time`` was read; see ``time``.
        item_category: Dense category ``0..C`` of every item (length ``H + 1``; 0 = unknown):
            the category of the item's first impression.
        user_vocab: Original user ids, sorted; dense user ``u`` is ``user_vocab[u]``.
        item_vocab: Original item ids, sorted; dense item ``i`` is ``item_vocab[i - 1]``.
        category_vocab: Original categories, sorted; dense ``c >= 1`` is ``category_vocab[c - 1]``.
        source: The path, for messages.
    """

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    time: np.ndarray
    time_kind: TimeKind
    item_category: np.ndarray
    user_vocab: np.ndarray
    item_vocab: np.ndarray
    category_vocab: np.ndarray
    source: str

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def num_users(self) -> int:
        return len(self.user_vocab)

    @property
    def num_categories(self) -> int:
        return len(self.category_vocab)

    def __len__(self) -> int:
        return len(self.user)


def resolve_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """Every role's column name: ``columns`` where given, the role's own name otherwise.

    Raises:
        ConfigError: On a key that is not a role, or a name that is not a non-empty string.
    """
    columns = dict(columns or {})
    for key, name in columns.items():
        if key not in ROLES:
            raise ConfigError(
                f"data.columns.{key}: unknown role {key!r}; the roles are {', '.join(ROLES)}"
            )
        if not isinstance(name, str) or not name:
            raise ConfigError(f"data.columns.{key}: must be a column name, got {name!r}")
    return {role: columns.get(role, role) for role in ROLES}


def _dataset(path: Path) -> ds.Dataset:
    """A pyarrow dataset over a parquet / csv file or a folder of parquet part files."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        # Spark's markers (_SUCCESS, .crc files) start with '_' or '.', as do hidden folders.
        files = sorted(
            p for p in path.rglob("*.parquet")
            if p.is_file()
            and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"{path}: the folder holds no parquet part files (*.parquet)")
        partitioning = ds.HivePartitioning.discover(infer_dictionary=False)
        return ds.dataset(
            [str(f) for f in files], format="parquet", partitioning=partitioning,
            partition_base_dir=str(path),
        )
    if not path.is_file():
        raise DataError(f"{path}: not a regular file or a folder")
    if path.suffix not in (".parquet", ".csv"):
        raise DataError(f"{path}: not a parquet or csv file, nor a folder of parquet files")
    return ds.dataset(str(path), format=path.suffix[1:])


class _Rows:
    """Maps a row of the concatenated log back to its file and its row within the file."""

    def __init__(self, root: Path) -> None:
        self.root, self.files, self.starts = root, [], []

    def add(self, file: str, start: int) -> None:
        if not self.files or self.files[-1] != file:
            self.files.append(file)
            self.starts.append(start)

    def where(self, row: int) -> str:
        """``<file>: row <r>``, ``r`` counted from 0 within the file."""
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return f"{self.files[k]}: row {row - self.starts[k]}"


def _column_error(rows: _Rows, role: str, name: str, row: int, what: str) -> DataError:
    return DataError(f"{rows.where(row)}: column {name!r} (data.columns.{role}) {what}")


def _first_null(array: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(pc.is_null(array).to_numpy(zero_copy_only=False))[0])


def _factorize(
    array: pa.ChunkedArray, rows: _Rows, role: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes ``0..n-1`` in the order of the sorted distinct values, and those values.

    Integral floats are integers (a column with a null becomes float in some writers); strings
    are factorised by pyarrow's hash table, numbers by pandas', without Python objects per row.
    """
    if array.null_count:
        raise _column_error(rows, role, name, _first_null(array), "has a missing value")
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.cast(kind.value_type)
        kind = kind.value_type
    if pa.types.is_floating(kind):
        values = array.to_numpy()
        bad = np.flatnonzero(values != np.round(values))
        if len(bad):
            raise _column_error(rows, role, name, int(bad[0]),
                                f"has a non-integer id {values[bad[0]]}")
        array = pa.chunked_array([pa.array(values.astype(np.int64))])
        kind = pa.int64()
    if pa.types.is_integer(kind):
        codes, uniques = pd.factorize(array.to_numpy())
        order = np.argsort(uniques, kind="stable")
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        # One hash table over the whole column (per-chunk dictionaries would be merged slowly).
        combined = pa.concat_arrays([c.cast(pa.large_string()) for c in array.chunks])
        encoded = pc.dictionary_encode(combined)
        codes = encoded.indices.to_numpy()
        uniques = encoded.dictionary
        order = pc.array_sort_indices(uniques).to_numpy()
        uniques = uniques.to_numpy(zero_copy_only=False)
    else:
        raise DataError(
            f"{rows.root}: column {name!r} (data.columns.{role}) has type {kind}; "
            "ids must be integers or strings"
        )
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], np.asarray(uniques)[order]


def _labels(array: pa.ChunkedArray, rows: _Rows, name: str) -> np.ndarray:
    if array.null_count:
        raise _column_error(rows, "label", name, _first_null(array), "has a missing value")
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
            or pa.types.is_boolean(array.type)):
        raise DataError(f"{rows.root}: column {name!r} (data.columns.label) has type "
                        f"{array.type}; labels must be 0/1 numbers or booleans")
    values = array.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        raise _column_error(rows, "label", name, int(bad[0]),
                            f"has the label {values[bad[0]]}; expected 0 or 1")
    return values.astype(np.float32)


def _times(array: pa.ChunkedArray, rows: _Rows, name: str) -> tuple[np.ndarray, TimeKind]:
    """Numbers as they are; timestamps, dates and ISO strings as nanoseconds since the epoch."""
    if array.null_count:
        raise _column_error(rows, "timestamp", name, _first_null(array), "has a missing value")
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind):
        return array.to_numpy().astype(np.int64), "number"
    if pa.types.is_floating(kind):
        values = array.to_numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise _column_error(rows, "timestamp", name, int(bad[0]),
                                f"has the time {values[bad[0]]}")
        return values, "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            array = array.cast(pa.timestamp("ns"))
        except pa.ArrowInvalid as err:
            raise DataError(
                f"{rows.root}: column {name!r} (data.columns.timestamp) is not a number, a date "
                f"or an ISO time ({' '.join(str(err).split())})"
            ) from None
        kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        ns = array.cast(pa.timestamp("ns", tz=getattr(kind, "tz", None)))
        return ns.cast(pa.int64()).to_numpy(), "datetime"
    raise DataError(f"{rows.root}: column {name!r} (data.columns.timestamp) has type {kind}; "
                    "expected numbers, timestamps, dates or ISO strings")


def read_impressions(path: str | Path, columns: dict[str, str] | None = None) -> ImpressionLog:
    """Read an impression log: a parquet or csv file, or a folder of parquet part files.

    Only the mapped columns are read. In a folder, hive partitions (``dt=2026-01-01/``) are
    columns too, so ``columns={"timestamp": "dt"}`` works.

    Args:
        path: A ``.parquet`` or ``.csv`` file, or a folder of ``*.parquet`` part files (files and
            folders starting with ``_`` or ``.``, such as Spark's ``_SUCCESS``, are skipped).
        columns: Maps our roles (``user_id``, ``item_id``, ``label``, ``timestamp``,
            ``category_id``) to the log's column names, where they differ. ``user_id``,
            ``item_id`` and ``label`` must exist; without a ``timestamp`` column the row order
            is the time, without ``category_id`` every item's category is 0 (unknown).

    Raises:
        DataError: On a missing or unreadable file, a missing required column, a missing value,
            a label other than 0 or 1, a non-integer numeric id or an unreadable time; the
            message names the file, the row, the column and its ``data.columns`` key.
        ConfigError: On an unknown role in ``columns``.

    Example::

        log = read_impressions("logs/", {"user_id": "uid", "item_id": "adgroup_id", "label": "clk"})
    """
    names = resolve_columns(columns)
    path = Path(path)
    progress = _Progress(str(path))
    try:
        dataset = _dataset(path)
        schema = dataset.schema
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise DataError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    present = {role: name for role, name in names.items() if name in schema.names}
    for role in REQUIRED_ROLES:
        if role not in present:
            hint = f"data.columns.{role}" if role in (columns or {}) else (
                f"map your column with data.columns.{role}")
            raise DataError(
                f"{path}: no column {names[role]!r} ({hint}); the columns are "
                f"{', '.join(schema.names)}"
            )
    for role in ("timestamp", "category_id"):
        if role in (columns or {}) and role not in present:
            raise DataError(
                f"{path}: no column {names[role]!r} (data.columns.{role}); the columns are "
                f"{', '.join(schema.names)}"
            )
    wanted = list(dict.fromkeys(present.values()))
    chunks: dict[str, list[pa.Array]] = {name: [] for name in wanted}
    rows, n, last_log = _Rows(path), 0, time.perf_counter()
    try:
        scanner = dataset.scanner(columns=wanted, batch_size=1 << 20)
        for tagged in scanner.scan_batches():
            batch = tagged.record_batch
            if not batch.num_rows:
                continue
            rows.add(tagged.fragment.path, n)
            for name in wanted:
                chunks[name].append(batch.column(name))
            n += batch.num_rows
            if time.perf_counter() - last_log > 5:
                last_log = time.perf_counter()
                log.info("%s: read %s rows so far", path, f"{n:,}")
    except _READ_ERRORS as err:
        raise DataError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    if n == 0:
        raise DataError(f"{path}: the log has no rows")
    progress.step("read", n, "rows")

    def column(role: str) -> pa.ChunkedArray:
        name = present[role]
        return pa.chunked_array(chunks[name], type=schema.field(name).type)

    user, user_vocab = _factorize(column("user_id"), rows, "user_id", present["user_id"])
    item, item_vocab = _factorize(column("item_id"), rows, "item_id", present["item_id"])
    item += 1
    label = _labels(column("label"), rows, present["label"])
    if "timestamp" in present:
        times, time_kind = _times(column("timestamp"), rows, present["timestamp"])
    else:
        times, time_kind = np.arange(n, dtype=np.int64), "row"
    item_category = np.zeros(len(item_vocab) + 1, dtype=np.int64)
    category_vocab = np.array([], dtype=object)
    if "category_id" in present:
        # The category of each item's first impression; a missing category is 0 (unknown).
        first = np.full(len(item_vocab) + 1, n, dtype=np.int64)
        np.minimum.at(first, item, np.arange(n))
        cats = column("category_id").take(pa.array(first[1:]))
        known = pc.invert(pc.is_null(cats)).to_numpy(zero_copy_only=False)
        if pa.types.is_string(cats.type) or pa.types.is_large_string(cats.type):
            known &= pc.not_equal(cats.fill_null(""), "").to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(known)
        if len(idx):
            codes, category_vocab = _factorize(
                cats.take(pa.array(idx)), rows, "category_id", present["category_id"]
            )
            item_category[idx + 1] = codes + 1
    progress.step("factorised", n, "rows")
    return ImpressionLog(
        user=user, item=item, label=label, time=times, time_kind=time_kind,
        item_category=item_category, user_vocab=user_vocab, item_vocab=item_vocab,
        category_vocab=np.asarray(category_vocab, dtype=object), source=str(path),
    )
