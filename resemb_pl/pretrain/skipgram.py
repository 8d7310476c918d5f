"""+Skip: skip-gram over the training behaviour sequences (res-embedding paper, Table 3)."""

from __future__ import annotations

import numpy as np
import torch

from resemb_pl.pretrain.sgns import SkipGram, pretrain_table


def context_pairs(samples, window: int) -> np.ndarray:
    """Skip-gram pairs of the training sequences, read off the positive training samples.

    A positive sample ``(s_1..s_k -> s_{k+1})`` contributes ``(s_{k+1}, s_{k+1-d})`` and its
    reverse for ``d = 1..window``. Over all ``k`` these are exactly the pairs within ``window``
    of each training sequence, and no validation or test target is used.

    Args:
        samples: Training samples (:class:`resemb_pl.data.protocols.Samples`).
        window: Largest distance between the two items of a pair.
    """
    pos = np.flatnonzero(samples.label > 0)
    center, length = samples.target[pos], samples.hist_len[pos]
    stop = samples.hist_start[pos] + length
    out = []
    for d in range(1, window + 1):
        has = length >= d
        context = samples.seq[stop[has] - d]
        out += [np.stack([center[has], context], 1), np.stack([context, center[has]], 1)]
    pairs = np.concatenate(out).astype(np.int64)
    return pairs[(pairs > 0).all(1)]


def pretrain_skipgram(
    samples,
    num_items: int,
    embedding_dim: int = 18,
    *,
    window: int = 2,
    epochs: int = 5,
    batch_size: int = 1024,
    lr: float = 0.01,
    num_negatives: int = 5,
    seed: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Train skip-gram on the training sequences; return the item table and the epoch losses."""
    return pretrain_table(lambda: SkipGram(num_items, embedding_dim),
                          context_pairs(samples, window), num_items, seed=seed, epochs=epochs,
                          batch_size=batch_size, lr=lr, num_negatives=num_negatives)
