"""Ids and times in one form, whatever the column types: what readers and requests share.

:func:`normalize_ids` makes ``6``, ``6.0`` and ``"6"`` one id, so the ids of requests match the
ids numbered at training; :func:`time_values` turns a time column into numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from resemb_pl.errors import DataError


def _is_null(value: object) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _scalar_id(value: object) -> int | str | None:
    """One id in canonical form: ``int`` if integral, ``str`` otherwise, ``None`` if null."""
    if _is_null(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating, Decimal)):
        if math.isfinite(value) and value == int(value):
            return int(value)
        return str(np.float64(value))
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (np.datetime64, dt.date, dt.datetime)):
        return str(pd.Timestamp(value))
    if _not_scalar(value):
        raise TypeError("mapping" if isinstance(value, dict) else "list")
    return str(value)


def normalize_ids(
    values: ArrayLike, *, source: str, column: str, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Put ids of any type into the one form in which training and requests compare them.

    Integers, integral floats (``6.0``, as an int column with a null becomes) and integral
    decimals become integers; every other id becomes a string (``6.5`` -> ``"6.5"``,
    booleans -> ``"True"``, dates -> ``"2024-01-31 00:00:00"``). The ids are compared through
    ``str()`` of this form, so ``6``, ``6.0`` and ``"6"`` are one id.

    Args:
        values: The ids (a column, an array or a list).
        source: The file, for error messages.
        column: The column, for error messages.
        rows: The row of each value, for error messages (default: its position).

    Returns:
        ``(ids, valid)``: the non-null ids, an ``int64`` array when every one is an integer and
        an object array of ``str`` otherwise; and the mask of the values that are not null
        (``None``, NaN, NaT), which callers drop, count or refuse.

    Raises:
        DataError: If a value is a list, array or mapping rather than one id, naming the row.

    Example::

        ids, valid = normalize_ids([6, 7.0, None], source="r.csv", column="item_id")
        # ids == array([6, 7]), valid == array([True, True, False])
    """
    if isinstance(values, (pd.Series, pd.Index)) and _extension(values.dtype):
        values = values.to_numpy(dtype=object, na_value=None)
    try:
        array = np.asarray(values)
    except ValueError:  # lists of different lengths among the values
        array = None
    if array is None or array.ndim != 1:  # e.g. lists among the values: one object per value
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    everything = np.ones(len(array), dtype=bool)
    kind = array.dtype.kind
    if kind == "O":
        inferred = pd.api.types.infer_dtype(array, skipna=True)
        if inferred in ("floating", "mixed-integer-float"):
            array = np.where(pd.isna(array), np.nan, array).astype(np.float64)
            kind = "f"
        elif inferred in ("string", "empty"):
            valid = ~pd.isna(array)
            return array[valid].astype(object), valid
    if kind == "i" or (kind == "u" and (not len(array) or array.max() < 2**63)):
        return array.astype(np.int64), everything
    if kind == "b":
        return array.astype(str).astype(object), everything
    if kind in "US":
        return array.astype(str).astype(object), everything
    if kind in "Mm":
        index = pd.Index(array)
        valid = ~index.isna()
        return np.array([str(v) for v in index[valid]], dtype=object), valid
    if kind == "f":
        valid = ~np.isnan(array)
        kept = array[valid]
        if np.all(np.isfinite(kept) & (kept == np.trunc(kept)) & (np.abs(kept) < 2.0**63)):
            return kept.astype(np.int64), valid
    out = np.empty(len(array), dtype=object)
    for i, value in enumerate(array.astype(object)):
        try:
            out[i] = _scalar_id(value)
        except TypeError as err:
            row = i if rows is None else int(rows[i])
            raise DataError(
                f"{source}: column {column!r} holds a {err} at row {row}, not a single id"
            ) from None
    valid = np.array([v is not None for v in out], dtype=bool)
    ids = out[valid]
    if all(type(v) is int and -(2**63) <= v < 2**63 for v in ids):
        return ids.astype(np.int64), valid
    return np.array([str(v) for v in ids], dtype=object), valid


def _extension(dtype: object) -> bool:
    """Whether ``dtype`` is a pandas extension type other than the string ones (nullable ints,
    time zones, arrow types): such columns are read as objects, with ``None`` for nulls."""
    return isinstance(dtype, pd.api.extensions.ExtensionDtype) and not isinstance(
        dtype, pd.StringDtype
    )


def _not_scalar(value: object) -> bool:
    return isinstance(value, (list, tuple, set, dict, np.ndarray))


def check_scalar_column(frame: pd.DataFrame, column: str, source: str) -> None:
    """Refuse a column that holds lists (or arrays, mappings) instead of one value per row.

    Raises:
        DataError: Naming the column and the first such row.
    """
    _check_scalar(frame[column], column, source)


def _check_scalar(values: pd.Series, column: str, source: str) -> None:
    if values.dtype != object:
        return
    bad = np.flatnonzero([_not_scalar(v) for v in values.to_numpy()])
    if len(bad):
        kind = "mapping" if isinstance(values.iloc[bad[0]], dict) else "list"
        raise DataError(
            f"{source}: column {column!r} holds a {kind} at row {bad[0]}, not a single value"
        )


def time_values(values: pd.Series, *, source: str, column: str) -> np.ndarray:
    """The times of ``values`` as numbers that sort in time order, whatever their type.

    Integers stay int64 and fractional times float64 (never rounded, so the order within a
    second is kept); datetimes and ISO 8601 date strings become int64 nanoseconds since the
    epoch (time zones are taken into account), and timedeltas nanoseconds.

    Raises:
        DataError: On a missing value, a value that is neither a number nor a date, or a
            number outside ``0 <= time < 2**62``, naming the column and the row.
    """
    _check_scalar(values, column, source)
    if pd.api.types.is_datetime64_any_dtype(values.dtype) or pd.api.types.is_timedelta64_dtype(
        values.dtype
    ):
        return _nanoseconds(values, source, column)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna()
    if bad.any() and not pd.api.types.is_numeric_dtype(values.dtype):
        dates = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        if dates.notna().all():
            return _nanoseconds(dates, source, column)
        if dates.notna().any():  # a column of dates: the first value that is not one
            bad = dates.isna()
    missing = np.flatnonzero(bad.to_numpy())
    if len(missing):
        raise DataError(f"{source}: column {column!r} is not numeric or a date (or is missing) "
                        f"at row {missing[0]}")
    out = np.flatnonzero(~((numbers >= 0) & (numbers < 2**62)).to_numpy(dtype=bool))
    if len(out):
        raise DataError(
            f"{source}: column {column!r} is out of range at row {out[0]} "
            f"({numbers.iloc[out[0]]}; expected 0 <= time < 2**62)"
        )
    return numbers.to_numpy(dtype=np.float64 if numbers.dtype.kind == "f" else np.int64)


def _nanoseconds(values: pd.Series, source: str, column: str) -> np.ndarray:
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise DataError(f"{source}: column {column!r} has a missing time at row {missing[0]}")
    index = pd.Index(values)
    try:
        return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)
    except (OverflowError, ValueError) as err:  # beyond the years 1677..2262
        raise DataError(f"{source}: column {column!r}: {err}") from None
