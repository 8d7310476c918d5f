"""Impression logs: one row per item shown to a user, with a click label and a time.

A recommender's own data is usually an impression log, often a folder of parquet part files
written by Spark (``dt=2026-01-01/part-00000.parquet``). ``source: impressions`` reads it:

- :func:`read_impressions` reads only the mapped columns (pyarrow datasets, batch by batch),
  checks them, and factorises the ids into dense ones, never holding a row as Python objects.
- :func:`impression_samples` makes one CTR sample per impression, labelled as logged. Its
  history is the user's clicked items *strictly before* the impression's time (an impression at
  the same time as a click does not see it), the last ``max_len`` of them; an impression with no
  earlier click keeps an empty history (a cold start). Splits are by time (``split="time"``) or
  by user (``split="user"``), and the interest graph is built from the training clicks only.
- :func:`impressions_data` is what :class:`~resemb_pl.data.datamodule.CTRDataModule` caches.

Everything is vectorised numpy (sorts, cumulative click counts), so a log of tens of millions
of impressions prepares in minutes; every step that takes a while logs its rate.
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
import torch

from resemb_pl.data import protocols
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.product import ProcessedData
from resemb_pl.data.protocols import Samples, SampleSplits
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


def _stable_argsort(key: np.ndarray) -> np.ndarray:
    # torch's stable sort is twice as fast as numpy's on tens of millions of keys, but costs
    # a few tenths of a second whatever the size.
    if len(key) < 4_000_000:
        return np.argsort(key, kind="stable")
    return torch.sort(torch.from_numpy(np.ascontiguousarray(key)), stable=True)[1].numpy()


def _canonical_order(data: ImpressionLog) -> np.ndarray:
    """The permutation that sorts impressions by user, time, item and label.

    One sort of a composite key where integer times make it fit 63 bits, else one stable sort
    per key (least significant first).
    """
    tie = data.item * 2 + data.label.astype(np.int64)  # < 2H + 2
    ties = 2 * data.num_items + 2
    if data.time.dtype.kind == "i" and len(data):
        t = data.time - data.time.min()
        span = int(t.max()) + 1
        if data.num_users * span * ties < 2**63:
            return _stable_argsort((data.user * span + t) * ties + tie)
        if data.num_users * span < 2**63:
            order = _stable_argsort(tie)
            return order[_stable_argsort(data.user[order] * span + t[order])]
    order = _stable_argsort(tie)
    order = order[_stable_argsort(data.time[order])]
    return order[_stable_argsort(data.user[order])]


def _time_bound(value: int | float | str, kind: TimeKind, key: str) -> int | float:
    """A ``val_from`` / ``test_from`` value on the scale of :attr:`ImpressionLog.time`.

    Numbers and dates convert into each other as Unix seconds.
    """
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is not None:
        if not np.isfinite(number):
            raise ConfigError(f"data.{key}: must be a finite time, got {value!r}")
        return int(round(number * 1e9)) if kind == "datetime" else number
    if kind == "row":
        raise ConfigError(
            f"data.{key}: the log has no time column (data.columns.timestamp), so the time is "
            f"the row number; give a row number, not {value!r}"
        )
    try:
        stamp = pd.Timestamp(str(value))
    except ValueError:
        raise ConfigError(f"data.{key}: cannot read {value!r} as a date or a time") from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    ns = int(stamp.value)
    return ns if kind == "datetime" else ns / 1e9


def check_time_split(
    time_fractions: tuple[float, float] = (0.8, 0.1),
    val_from: int | float | str | None = None,
    test_from: int | float | str | None = None,
) -> None:
    """Check the options of a time split before any data is read.

    Raises:
        ConfigError: On fractions outside ``0 < a``, ``0 < b``, ``a + b < 1``, only one of
            ``val_from`` / ``test_from``, or a bound that is neither a number nor a date.
    """
    if (val_from is None) != (test_from is None):
        given, missing = ("val_from", "test_from")[:: 1 if test_from is None else -1]
        raise ConfigError(f"data.{missing}: required with data.{given} (or give neither, "
                          "and data.time_fractions splits by quantiles)")
    if val_from is not None:
        for key, value in (("val_from", val_from), ("test_from", test_from)):
            _time_bound(value, "number", key)  # a number, or a date that parses
        return
    try:
        a, b = (float(f) for f in time_fractions)
    except (TypeError, ValueError):
        raise ConfigError(
            f"data.time_fractions: need two numbers, got {time_fractions!r}"
        ) from None
    if not (0 < a and 0 < b and a + b < 1):
        raise ConfigError(
            f"data.time_fractions: need train > 0, validation > 0 and train + validation < 1, "
            f"got {list(time_fractions)}"
        )


def time_bounds(
    times: np.ndarray,
    kind: TimeKind,
    time_fractions: tuple[float, float] = (0.8, 0.1),
    val_from: int | float | str | None = None,
    test_from: int | float | str | None = None,
) -> tuple[int | float, int | float]:
    """The times where validation and test start: given, or quantiles of ``times``.

    With ``time_fractions=(a, b)``, validation starts at the time of the impression at the
    ``a`` quantile and test at the ``a + b`` quantile (an impression at a boundary time goes to
    the later split).

    Raises:
        ConfigError: On the options :func:`check_time_split` refuses, or
            ``val_from >= test_from``.
    """
    check_time_split(time_fractions, val_from, test_from)
    if val_from is not None:
        lo, hi = _time_bound(val_from, kind, "val_from"), _time_bound(test_from, kind, "test_from")
        if not lo < hi:
            raise ConfigError(f"data.val_from: must be before data.test_from, got "
                              f"{val_from!r} and {test_from!r}")
        return lo, hi
    a, b = (float(f) for f in time_fractions)
    n = len(times)
    k = (min(int(a * n), n - 1), min(int((a + b) * n), n - 1))
    part = np.partition(times, k)
    return part[k[0]].item(), part[k[1]].item()


def impression_samples(
    data: ImpressionLog,
    max_len: int = 50,
    split: Literal["time", "user"] = "time",
    time_fractions: tuple[float, float] = (0.8, 0.1),
    val_from: int | float | str | None = None,
    test_from: int | float | str | None = None,
    user_fractions: tuple[float, float] = (0.8, 0.1),
    negatives: int = 0,
    seed: int = 0,
) -> SampleSplits:
    """One CTR sample per impression; histories of earlier clicks; splits by time or user.

    The history of an impression at time ``t`` is the user's clicked items with time
    ``< t`` (clicks at ``t`` itself are not "before"), oldest first, the last ``max_len`` of
    them; it may be empty. Samples are ordered by user, time, item and label, so the same rows
    in any file order give the same samples.

    Splits:
        - ``"time"``: training before ``val_from``, validation from ``val_from`` and test from
          ``test_from`` (see :func:`time_bounds`). The graph is built from the clicks before
          ``val_from``, so no validation or test click is in it. Histories of validation and
          test impressions hold every earlier click, as a served model sees them.
        - ``"user"``: users are split by ``user_fractions``; the graph comes from the training
          users' clicks.

    Args:
        data: The impressions.
        max_len: Longest history kept.
        split: ``"time"`` or ``"user"``.
        time_fractions: Quantiles of the times where validation and test start, as fractions
            of the impressions in training and validation; used unless ``val_from`` and
            ``test_from`` are given.
        val_from: Where validation starts: a time in the column's unit, or a date / ISO time.
        test_from: Where test starts.
        user_fractions: Fractions of users in training and validation for ``split="user"``.
        negatives: For each click, this many extra samples with label 0 and the same history,
            whose targets are items the user never saw (for logs of clicks only).
        seed: Seed of the user split and the negative sampling.

    Raises:
        ConfigError: On a bad ``max_len``, ``split`` or bound (see :func:`time_bounds`).
        DataError: If a split would be empty.
    """
    if max_len < 1:
        raise ConfigError(f"data.max_len: must be >= 1, got {max_len}")
    if negatives < 0:
        raise ConfigError(f"data.sample_negatives: must be >= 0, got {negatives}")
    if split not in ("time", "user"):
        raise ConfigError(
            f"data.split: an impression log splits by 'time' or 'user', got {split!r}"
        )
    progress = _Progress(data.source)
    rng = np.random.default_rng(seed)
    n = len(data)
    # Canonical order: user, then time, then item and label (only to fix the order of ties).
    order = _canonical_order(data)
    user, item = data.user[order], data.item[order]
    label, times = data.label[order], data.time[order]
    del order
    progress.step("sorted", n, "impressions")

    # Clicks before each impression: the exclusive running click count at the first row of
    # the impression's (user, time) group, less the count at the user's first row.
    clicked = label == 1
    before = np.cumsum(clicked) - clicked
    new_user = np.r_[True, user[1:] != user[:-1]]
    new_group = new_user | np.r_[True, times[1:] != times[:-1]]
    index = np.arange(n)
    hist_end = before[np.maximum.accumulate(np.where(new_group, index, 0))]
    user_first = before[np.maximum.accumulate(np.where(new_user, index, 0))]
    del before, new_group, index
    hist_len = np.minimum(hist_end - user_first, max_len)
    hist_start = hist_end - hist_len
    del hist_end, user_first
    seq = item[clicked]

    if split == "time":
        lo, hi = time_bounds(data.time, data.time_kind, time_fractions, val_from, test_from)
        group = (times >= lo).astype(np.int8) + (times >= hi)
    else:
        group = protocols._split_users(rng, data.num_users, user_fractions).astype(np.int8)[user]
    in_graph = clicked & (group == 0)

    target, sample_label, sample_user = item, label, user
    if negatives:
        extra = np.where(clicked, negatives, 0)
        expand = np.repeat(np.arange(n), 1 + extra)
        is_negative = np.r_[False, expand[1:] == expand[:-1]]
        key = np.unique(user * (data.num_items + 1) + item)
        target = item[expand]
        target[is_negative] = protocols.sample_negatives(
            user[expand[is_negative]], key, data.num_items, rng
        )
        sample_label = np.where(is_negative, np.float32(0), label[expand]).astype(np.float32)
        sample_user, hist_start, hist_len = user[expand], hist_start[expand], hist_len[expand]
        group = group[expand]
        del key, expand, is_negative

    splits = []
    for g, name in enumerate(("training", "validation", "test")):
        idx = np.flatnonzero(group == g)
        if not len(idx):
            bounds = f"val_from={lo}, test_from={hi}" if split == "time" else "data.split=user"
            raise DataError(f"{data.source}: no {name} impressions ({bounds}); "
                            "change data.time_fractions or data.val_from / data.test_from")
        splits.append(Samples(seq, hist_start[idx], hist_len[idx], target[idx],
                              sample_label[idx], sample_user[idx]))
    progress.step("built samples from", n, "impressions")
    return SampleSplits(*splits, *protocols.graph_sequences(user, item, in_graph))


def impressions_data(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    max_len: int = 50,
    split: Literal["time", "user"] = "time",
    time_fractions: tuple[float, float] = (0.8, 0.1),
    val_from: int | float | str | None = None,
    test_from: int | float | str | None = None,
    sample_negatives: int = 0,
    window: int = 2,
    top_k: int = 8,
    seed: int = 0,
) -> ProcessedData:
    """Read an impression log and make its samples, interest graph and catalogue.

    The result is what :class:`~resemb_pl.data.datamodule.CTRDataModule` caches for every
    source. The arguments are those of :func:`read_impressions` and :func:`impression_samples`,
    plus the graph's ``window`` and ``top_k``.
    """
    data = read_impressions(path, columns)
    splits = impression_samples(
        data, max_len=max_len, split=split, time_fractions=time_fractions, val_from=val_from,
        test_from=test_from, negatives=sample_negatives, seed=seed,
    )
    if data.num_items < top_k:
        raise DataError(f"{data.source}: {data.num_items} items is fewer than data.top_k={top_k}")
    progress = _Progress(data.source)
    catalogue = Catalogue.from_vocabulary(data.item_vocab, data.item_category,
                                          data.category_vocab, max_len=max_len)
    processed = ProcessedData.from_splits(catalogue, splits, window, top_k)
    progress.step("built the interest graph from", len(splits.graph_items), "clicks")
    log.info(
        "%s: %s impressions of %s users and %s items; samples train %s / val %s / test %s; "
        "graph %s edges from %s training clicks",
        data.source, f"{len(data):,}", f"{data.num_users:,}", f"{data.num_items:,}",
        *(f"{len(s):,}" for s in splits), f"{processed.edge_index.shape[1]:,}",
        f"{len(splits.graph_items):,}",
    )
    return processed
