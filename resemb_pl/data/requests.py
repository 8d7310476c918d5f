"""Scoring requests with original item ids -> samples, with the catalogue of a checkpoint.

A requests file is a parquet or csv table with one candidate per row:

- ``history``: the user's items, original ids, oldest first. In parquet a list per row; in csv
  the ids separated by spaces in one cell (``12 7 31``; an empty cell is an empty history);
- ``item_id``: the candidate item, original id;
- ``user_id`` (optional): groups the rows by user.

Ids are put in one form by :func:`~resemb_pl.data.interactions.normalize_ids`, the function
that numbered the items at training, so ``6``, ``6.0`` and ``"6"`` are the same item whatever
the column types of either file. A null id in a history is dropped (and counted in the log); a
null candidate is an error naming its row. An id the model has never seen becomes the padding
id 0 (a history position that the model ignores, or a candidate scored with a zero item
embedding); such ids are counted and reported in one log line. Histories may be empty (new
users); a file with no rows gives no samples.

The ids are those of the scoring model's :class:`~resemb_pl.data.catalogue.Catalogue`, read
from its checkpoint; ``resemb-pl predict`` hands it to the data module, and in Python::

    dm = CTRDataModule(source="requests", path="requests.parquet")
    dm.use_catalogue(Catalogue.from_checkpoint(load_checkpoint("model.ckpt")))
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from resemb_pl.data.interactions import normalize_ids
from resemb_pl.data.protocols import Samples
from resemb_pl.errors import DataError

log = logging.getLogger(__name__)

REQUIRED = ("history", "item_id")


def read_requests(
    path: str | Path, item_vocab: np.ndarray, max_len: int | None = None
) -> tuple[Samples, dict[str, int]]:
    """Read a requests file into samples with dense ids (labels are 0).

    Args:
        path: Parquet or csv file with ``history``, ``item_id`` and optionally ``user_id``.
        item_vocab: Original item ids as strings; dense item ``i >= 1`` is ``item_vocab[i - 1]``.
        max_len: Keep the most recent ``max_len`` history items (``None``: all).

    Returns:
        The samples in the file's row order, and the counts ``rows``, ``unknown_candidates``,
        ``history_ids`` (ids that are not null), ``unknown_history`` and ``null_history``.

    Raises:
        DataError: On a missing or unreadable file, a missing column, a history that is not a
            list (parquet) or is written as one (csv), a null candidate, or a list where one
            id belongs; each names the file, the column and the row.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise DataError(f"{path}: no such requests file")
    read = _read_csv if path.suffix == ".csv" else _read_parquet
    columns, lengths, flat = read(path)
    num_rows = len(lengths)

    candidates, valid = normalize_ids(columns["item_id"], source=source, column="item_id")
    if not valid.all():
        row = int(np.flatnonzero(~valid)[0])
        raise DataError(f"{path}: column 'item_id' has a missing value at row {row}; every "
                        "request needs a candidate item")
    row_of = np.repeat(np.arange(num_rows), lengths)
    history, known = normalize_ids(flat, source=source, column="history", rows=row_of)
    lengths = np.bincount(row_of[known], minlength=num_rows).astype(np.int64)  # nulls dropped

    seq = _lookup(item_vocab, history) + 1
    target = _lookup(item_vocab, candidates) + 1
    starts = np.cumsum(lengths) - lengths
    hist_len = lengths if max_len is None else np.minimum(lengths, max_len)
    if "user_id" in columns:
        users, has_user = normalize_ids(columns["user_id"], source=source, column="user_id")
        user = np.full(num_rows, -1, dtype=np.int64)  # a null user is a group of its own
        user[has_user] = pd.factorize(users.astype(str))[0]
        user[~has_user] = user.max(initial=-1) + 1 + np.arange(int((~has_user).sum()))
    else:
        user = np.arange(num_rows, dtype=np.int64)
    samples = Samples(
        seq=seq.astype(np.int64),
        hist_start=(starts + lengths - hist_len).astype(np.int64),
        hist_len=hist_len.astype(np.int64),
        target=target.astype(np.int64),
        label=np.zeros(num_rows, dtype=np.float32),
        user=user,
    )
    counts = {
        "rows": num_rows,
        "unknown_candidates": int((target == 0).sum()),
        "history_ids": len(seq),
        "unknown_history": int((seq == 0).sum()),
        "null_history": int((~known).sum()),
    }
    if counts["null_history"]:
        log.warning("%s: dropped %d null id(s) from the histories", path, counts["null_history"])
    if counts["unknown_candidates"] or counts["unknown_history"]:
        log.warning(
            "%s: %d of %d candidate ids and %d of %d history ids are unknown to the model and "
            "use the padding id 0",
            path, counts["unknown_candidates"], counts["rows"], counts["unknown_history"],
            counts["history_ids"],
        )
    else:
        log.info("%s: %d requests, every item id known to the model", path, counts["rows"])
    return samples, counts


def _lookup(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in ``vocab`` (compared as strings; the first of repeats), or -1."""
    index = pd.Index(np.asarray(vocab, dtype=str))
    keys = np.asarray(ids).astype(str)
    if index.is_unique:
        return index.get_indexer(keys)
    first = ~index.duplicated()
    found = index[first].get_indexer(keys)
    return np.where(found >= 0, np.flatnonzero(first)[found], -1)


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; a request has {list(REQUIRED)}")


def _read_parquet(path: Path) -> tuple[dict[str, pd.Series], np.ndarray, pd.Series]:
    """The id columns, the history length of each row and the history ids, concatenated."""
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataError(f"{path}: cannot read the requests ({_one_line(err)})") from None
    _check_columns(path, table.column_names)
    history = table.column("history")
    kind = history.type
    lists = (pa.types.is_list(kind) or pa.types.is_large_list(kind)
             or pa.types.is_fixed_size_list(kind))
    if pa.types.is_null(kind):  # every history null: new users
        lengths, flat = np.zeros(table.num_rows, dtype=np.int64), pd.Series([], dtype=object)
    elif not lists:
        row = next((i for i, v in enumerate(history) if v.is_valid), 0)
        raise DataError(f"{path}: column 'history' row {row} is not a list of item ids")
    else:
        history = history.combine_chunks() if history.num_chunks else pa.array([], kind)
        lengths = pc.list_value_length(history).fill_null(0).to_numpy(zero_copy_only=False)
        flat = history.flatten()
        if pa.types.is_null(flat.type):
            flat = pd.Series([None] * len(flat), dtype=object)
        else:  # integers with nulls as Python ints, not floats that would round big ids
            flat = flat.to_pandas(integer_object_nulls=True)
    columns = {c: table.column(c).to_pandas() for c in ("item_id", "user_id")
               if c in table.column_names}
    return columns, np.asarray(lengths, dtype=np.int64), flat


def _read_csv(path: Path) -> tuple[dict[str, pd.Series], np.ndarray, np.ndarray]:
    """As :func:`_read_parquet`, for a csv whose history cells hold ids separated by spaces.

    The history ids are typed as pandas types a csv column: numbers if every one of the file
    is a number, else strings; so they compare with the ``item_id`` column as they should.
    """
    try:
        frame = pd.read_csv(path, dtype={"history": object})
    except Exception as err:  # noqa: BLE001 - pandas raises many kinds
        raise DataError(f"{path}: cannot read the requests ({_one_line(err)})") from None
    _check_columns(path, list(frame.columns))
    tokens = []
    for row, cell in enumerate(frame["history"].to_numpy()):
        if isinstance(cell, str) and cell.lstrip()[:1] in ("[", "("):
            raise DataError(
                f"{path}: column 'history' row {row} is {cell[:40]!r}; in a csv, a history is "
                "the item ids separated by spaces (12 7 31), or an empty cell"
            )
        tokens.append(cell.split() if isinstance(cell, str) else [])
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    flat = pd.Series([t for row in tokens for t in row], dtype=object)
    numbers = pd.to_numeric(flat, errors="coerce")
    if len(flat) and numbers.notna().all():
        flat = numbers
    columns = {c: frame[c] for c in ("item_id", "user_id") if c in frame.columns}
    return columns, lengths, flat


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
