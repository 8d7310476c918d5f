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
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from resemb_pl.data import protocols
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.impression_log import (
    REQUIRED_ROLES,
    ROLES,
    ImpressionLog,
    TimeKind,
    _Progress,
    read_impressions,
    resolve_columns,
)
from resemb_pl.data.product import ProcessedData
from resemb_pl.data.protocols import Samples, SampleSplits
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["REQUIRED_ROLES", "ROLES", "ImpressionLog", "check_time_split", "impression_samples",
           "impressions_data", "read_impressions", "resolve_columns", "time_bounds"]


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
    if not (a > 0 and b > 0 and a + b < 1):
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
