"""The canonical interactions table that every reader returns and every protocol consumes.

One row per event, sorted by user then time (ties keep file order), with dense integer ids:

- ``user_id``: ``0..U-1``
- ``item_id``: ``1..H`` (``0`` is the padding id of the models)
- ``category_id``: ``1..C``, ``0`` = unknown
- ``timestamp``: the time as a number (int64, or float64 for fractional times; datetimes are
  int64 nanoseconds since the epoch), or the sequence position
- ``rating``: optional float32

The original ids are kept in :class:`Interactions` so that every dense id can be traced back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from resemb_pl.data.ids import check_scalar_column, normalize_ids, time_values
from resemb_pl.errors import DataError

__all__ = ["REQUIRED_COLUMNS", "Interactions", "canonicalize", "check_ids", "check_scalar_column",
           "drop_short_users", "normalize_ids", "time_values"]

REQUIRED_COLUMNS = ("user_id", "item_id", "category_id", "timestamp")


@dataclass
class Interactions:
    """Events with dense ids, plus the vocabularies that map them back to the source ids.

    Args:
        frame: The canonical table (see the module docstring).
        user_vocab: Original user ids; dense user ``u`` is ``user_vocab[u]``.
        item_vocab: Original item ids; dense item ``i >= 1`` is ``item_vocab[i - 1]``.
        category_vocab: Category names; dense category ``c >= 1`` is ``category_vocab[c - 1]``.
        item_domain: Optional true interest domain of each dense item (length ``H + 1``,
            entry 0 unused); only synthetic data knows it.
        source: A short human-readable description of where the table came from.
        catalogue_category: Optional category of every dense item (length ``H + 1``), for
            catalogues whose items do not all occur in the events.
    """

    frame: pd.DataFrame
    user_vocab: np.ndarray
    item_vocab: np.ndarray
    category_vocab: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    item_domain: np.ndarray | None = None
    source: str = "table"
    catalogue_category: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.user_vocab)

    @property
    def num_items(self) -> int:
        """Number of real items ``H``; embedding tables have ``H + 1`` rows."""
        return len(self.item_vocab)

    @property
    def num_categories(self) -> int:
        """Number of real categories ``C``; category tables have ``C + 1`` rows."""
        return len(self.category_vocab)

    @property
    def num_events(self) -> int:
        return len(self.frame)

    def item_category(self) -> np.ndarray:
        """Category of every dense item, length ``H + 1`` (entry 0 is 0).

        An item is given the category of its first event, unless the catalogue says.
        """
        if self.catalogue_category is not None:
            return np.asarray(self.catalogue_category, dtype=np.int64)
        out = np.zeros(self.num_items + 1, dtype=np.int64)
        first = self.frame.drop_duplicates("item_id")
        out[first["item_id"].to_numpy()] = first["category_id"].to_numpy()
        return out

    def sequences(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(users, lengths, items)``: each user's behaviour sequence, concatenated."""
        users = self.frame["user_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        lengths = np.diff(np.r_[starts, len(users)])
        return users[starts], lengths, self.frame["item_id"].to_numpy()


def canonicalize(
    frame: pd.DataFrame,
    *,
    user: str = "user_id",
    item: str = "item_id",
    category: str | None = "category_id",
    timestamp: str | None = "timestamp",
    rating: str | None = "rating",
    source: str = "table",
    category_names: dict | None = None,
) -> Interactions:
    """Turn a raw events table into :class:`Interactions` with dense ids.

    Users, items and categories are numbered in order of first appearance after a stable sort
    by user then time (the real time: fractional and datetime values are never rounded), so the
    same file always gives the same ids. User and item ids go through :func:`normalize_ids`, as
    the ids of requests do, so ``6``, ``6.0`` and ``"6"`` are one item.

    Args:
        frame: The raw events.
        user: Column holding the user id.
        item: Column holding the item id.
        category: Column holding the category (any hashable value); ``None`` when there is
            none, which gives every item category 0 (unknown).
        timestamp: Column holding the time; ``None`` uses the row order.
        rating: Column holding the rating, if present (ignored when the column is absent).
        source: Name of the file or data set, used in error messages.
        category_names: Optional mapping from raw category value to a display name.

    Raises:
        DataError: On a missing column, an empty table, missing or non-integer (float) ids, a
            list where one value belongs, or bad times or ratings.
    """
    needed = [c for c in (user, item, category, timestamp) if c is not None]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {', '.join(map(repr, missing))}")
    if len(frame) == 0:
        raise DataError(f"{source}: the table is empty")
    for col in (category, timestamp, rating):
        if col is not None and col in frame.columns:
            check_scalar_column(frame, col, source)
    ids = {}
    for col in (user, item):
        if pd.api.types.is_float_dtype(frame[col]):
            values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isnan(values) & ~(values == np.round(values)))
            if len(bad):
                raise DataError(
                    f"{source}: column {col!r} has a non-integer id {values[bad[0]]} "
                    f"at row {bad[0]}"
                )
        ids[col], valid = normalize_ids(frame[col], source=source, column=col)
        if not valid.all():
            row = int(np.flatnonzero(~valid)[0])
            raise DataError(f"{source}: column {col!r} has a missing value at row {row}")

    # Ids in the one form that requests are matched in (6, 6.0 and "6" are one id).
    df = pd.DataFrame({"_user": ids[user], "_item": ids[item]})
    if timestamp is not None:
        df["timestamp"] = time_values(frame[timestamp], source=source, column=timestamp)
    else:
        df["timestamp"] = np.arange(len(df), dtype=np.int64)
    df["_cat"] = frame[category].to_numpy() if category is not None else None
    has_rating = rating is not None and rating in frame.columns
    if has_rating:
        r = pd.to_numeric(frame[rating], errors="coerce")
        if r.isna().any():
            row = int(np.flatnonzero(r.isna().to_numpy())[0])
            raise DataError(f"{source}: column {rating!r} is not numeric or NaN at row {row}")
        out = np.flatnonzero(~(np.isfinite(r) & (r >= 0)).to_numpy())
        if len(out):
            raise DataError(
                f"{source}: column {rating!r} is out of range at row {out[0]} "
                f"({r.iloc[out[0]]}; expected a finite rating >= 0)"
            )
        df["rating"] = r.to_numpy().astype(np.float32)

    # Stable sort: user (by first appearance), then time; ties keep file order.
    user_codes, user_vocab = pd.factorize(df["_user"], sort=False)
    df["user_id"] = user_codes.astype(np.int64)
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    # Renumber users by first appearance in the sorted table (already the case) and items too.
    item_codes, item_vocab = pd.factorize(df["_item"], sort=False)
    df["item_id"] = item_codes.astype(np.int64) + 1
    if category is not None:
        cat = df["_cat"]
        known = cat.notna() & (cat.astype(str) != "")
        cat_codes, cat_vocab = pd.factorize(cat.where(known), sort=False)
        df["category_id"] = np.where(cat_codes >= 0, cat_codes + 1, 0).astype(np.int64)
        cat_vocab = np.asarray(cat_vocab, dtype=object)
        if category_names:
            cat_vocab = np.array([category_names.get(c, str(c)) for c in cat_vocab], dtype=object)
    else:
        df["category_id"] = np.zeros(len(df), dtype=np.int64)
        cat_vocab = np.array([], dtype=object)
    columns = ["user_id", "item_id", "category_id", "timestamp"]
    columns += ["rating"] if has_rating else []
    return Interactions(
        frame=df[columns],
        user_vocab=np.asarray(user_vocab, dtype=object),
        item_vocab=np.asarray(item_vocab, dtype=object),
        category_vocab=cat_vocab,
        source=source,
    )


def check_ids(data: Interactions) -> None:
    """Check that the dense ids lie in their ranges (``0..U-1``, ``1..H``, ``0..C``).

    Raises:
        DataError: Naming the column, the first bad row and the allowed range.
    """
    frame = data.frame
    ranges = {
        "user_id": (0, data.num_users - 1),
        "item_id": (1, data.num_items),
        "category_id": (0, data.num_categories),
    }
    for col, (low, high) in ranges.items():
        values = frame[col].to_numpy()
        bad = np.flatnonzero((values < low) | (values > high))
        if len(bad):
            raise DataError(
                f"{data.source}: column {col!r} has id {values[bad[0]]} at row {bad[0]}, "
                f"outside {low}..{high}"
            )


def drop_short_users(data: Interactions, min_events: int = 2) -> tuple[Interactions, int]:
    """Drop the events of users with fewer than ``min_events`` events; renumber the users.

    Item and category ids are kept (an item left without events stays in the vocabulary, like
    a catalogue item nobody clicked), so the vocabularies still map every dense id back.

    Returns:
        The filtered interactions and the number of users dropped.

    Raises:
        DataError: If no user is left.
    """
    users = data.frame["user_id"].to_numpy()
    counts = np.bincount(users, minlength=data.num_users)
    keep_user = counts >= min_events
    dropped = int((~keep_user).sum())
    if not keep_user.any():
        raise DataError(
            f"{data.source}: the table is empty after dropping the {dropped} user(s) with "
            f"fewer than {min_events} events"
        )
    if not dropped:
        return data, 0
    new_id = np.cumsum(keep_user) - 1
    frame = data.frame[keep_user[users]].reset_index(drop=True)
    frame = frame.assign(user_id=new_id[frame["user_id"].to_numpy()].astype(np.int64))
    return replace(data, frame=frame, user_vocab=data.user_vocab[keep_user]), dropped
