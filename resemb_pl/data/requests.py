"""Scoring requests with original item ids -> samples, with the vocabulary of a checkpoint.

A requests file is a parquet (or csv) table with one candidate per row:

- ``history``: the user's items, original ids, oldest first (a list per row);
- ``item_id``: the candidate item, original id;
- ``user_id`` (optional): groups the rows by user.

Ids are matched as strings against the checkpoint's item vocabulary. An id the model has never
seen becomes the padding id 0 (a history position that the model ignores, or a candidate
scored with a zero item embedding); such ids are counted and reported in one log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from resemb_pl.checkpoint import load_checkpoint
from resemb_pl.data.protocols import Samples
from resemb_pl.errors import CheckpointError, DataError

log = logging.getLogger(__name__)

REQUIRED = ("history", "item_id")


def checkpoint_vocabulary(path: str | Path) -> dict[str, np.ndarray]:
    """The id vocabulary and item -> category table that a ``CTRTask`` checkpoint holds.

    Returns:
        ``num_items``, ``num_categories``, ``item_category`` (``(H + 1,)``), ``item_vocab``,
        ``category_vocab`` and ``max_len`` (the training history length, if known).
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    vocab = ckpt.get("resemb_vocab")
    category = ckpt.get("state_dict", {}).get("item_category")
    if vocab is None or category is None:
        raise CheckpointError(
            f"{path}: the checkpoint has no id vocabulary (resemb_vocab) or item_category; "
            "retrain it with this version of resemb-pl"
        )
    hparams = ckpt.get("hyper_parameters", {})
    data_hparams = ckpt.get("datamodule_hyper_parameters", {})
    return {
        "num_items": np.int64(hparams.get("num_items", len(vocab["items"]))),
        "num_categories": np.int64(hparams.get("num_categories", len(vocab["categories"]))),
        "item_category": category.numpy().astype(np.int64),
        "item_vocab": np.asarray(vocab["items"], dtype=str),
        "category_vocab": np.asarray(vocab["categories"], dtype=str),
        "max_len": np.int64(data_hparams.get("max_len", 0)),
    }


def read_requests(
    path: str | Path, item_vocab: np.ndarray, max_len: int | None = None
) -> tuple[Samples, dict[str, int]]:
    """Read a requests file into samples with dense ids (labels are 0).

    Args:
        path: Parquet or csv file with ``history``, ``item_id`` and optionally ``user_id``.
        item_vocab: Original item ids; dense item ``i >= 1`` is ``item_vocab[i - 1]``.
        max_len: Keep the most recent ``max_len`` history items (``None``: all).

    Returns:
        The samples in the file's row order, and the counts ``rows``, ``unknown_candidates``,
        ``history_ids`` and ``unknown_history``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such requests file")
    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise DataError(f"{path}: cannot read the requests ({err})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; a request has {list(REQUIRED)}")
    histories = frame["history"]
    bad = [i for i, h in enumerate(histories) if not isinstance(h, (list, tuple, np.ndarray))]
    if bad:
        raise DataError(f"{path}: column 'history' row {bad[0]} is not a list of item ids")
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(frame))
    flat = np.concatenate([np.asarray(h, dtype=object) for h in histories] + [np.zeros(0, object)])
    index = pd.Index(np.asarray(item_vocab, dtype=str))
    seq = index.get_indexer(flat.astype(str)) + 1
    target = index.get_indexer(frame["item_id"].to_numpy().astype(str)) + 1
    starts = np.cumsum(lengths) - lengths
    hist_len = lengths if max_len is None else np.minimum(lengths, max_len)
    if "user_id" in frame.columns:
        user = pd.factorize(frame["user_id"])[0].astype(np.int64)
    else:
        user = np.arange(len(frame), dtype=np.int64)
    samples = Samples(
        seq=seq.astype(np.int64),
        hist_start=(starts + lengths - hist_len).astype(np.int64),
        hist_len=hist_len.astype(np.int64),
        target=target.astype(np.int64),
        label=np.zeros(len(frame), dtype=np.float32),
        user=user,
    )
    counts = {
        "rows": len(frame),
        "unknown_candidates": int((target == 0).sum()),
        "history_ids": len(seq),
        "unknown_history": int((seq == 0).sum()),
    }
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


def requests_arrays(path: str | Path, checkpoint: str | Path) -> dict[str, np.ndarray]:
    """The data module's arrays for scoring ``path`` with ``checkpoint``: vocabulary and samples.

    Histories are cut to the checkpoint's training ``max_len``.
    """
    arrays = checkpoint_vocabulary(checkpoint)
    max_len = int(arrays.pop("max_len")) or None
    samples, _ = read_requests(path, arrays["item_vocab"], max_len)
    arrays.update(samples.to_arrays("predict_"))
    return arrays
