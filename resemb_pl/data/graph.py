"""Algorithm 1 of the res-embedding paper: behaviour sequences -> item interest graph.

For every sequence and every position ``c``, each other position ``w`` with ``|w - c| <= window``
adds 1 to ``Z[g_c, g_w]``. Each row then keeps its ``top_k`` largest entries; a tie at the
boundary keeps the smaller neighbour id.

The graph must be built from training sequences only (see :func:`resemb_pl.data.protocols`):
an evaluation target must never be a graph neighbour of its own history.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from resemb_pl.errors import ConfigError, DataError


def build_interest_graph(
    items: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor,
    num_items: int,
    window: int = 2,
    top_k: int = 8,
) -> Data:
    r"""Build the item interest graph ``Z`` of Algorithm 1, vectorised (no loop over clicks).

    Args:
        items: All behaviour sequences concatenated, item ids in ``1..num_items``.
        lengths: The length of each sequence; sums to ``len(items)``.
        num_items: Number of items ``H``; the graph has ``H + 1`` nodes (node 0 is padding).
        window: The co-occurrence window :math:`\Delta`.
        top_k: Neighbours kept per item :math:`K`.

    Returns:
        A :class:`~torch_geometric.data.Data` with ``edge_index`` (``[0]`` the neighbour ``j``,
        ``[1]`` the item ``i``, grouped by ``i``),
        ``edge_weight`` (the co-occurrence counts ``Z[i, j]``, float) and ``num_nodes = H + 1``.

    Example::

        data = build_interest_graph([1, 2, 3, 2, 4], [3, 2], num_items=4, window=1, top_k=2)
    """
    if window < 1:
        raise ConfigError(f"data.window: must be >= 1, got {window}")
    if top_k < 1:
        raise ConfigError(f"data.top_k: must be >= 1, got {top_k}")
    items = torch.as_tensor(np.array(items, dtype=np.int64)).reshape(-1)
    lengths = torch.as_tensor(np.array(lengths, dtype=np.int64)).reshape(-1)
    if int(lengths.sum()) != items.numel() or bool((lengths < 0).any()):
        raise DataError(
            f"interest graph: lengths sum to {int(lengths.sum())} but there are {items.numel()} items"
        )
    if items.numel() and (int(items.min()) < 1 or int(items.max()) > num_items):
        raise DataError(
            f"interest graph: item ids must lie in 1..{num_items}, "
            f"found {int(items.min())}..{int(items.max())}"
        )
    n = num_items + 1
    # Z is symmetric: count each unordered pair of positions (c, c + d), 0 < d <= window, once,
    # as the key min * n + max, then mirror. Keys fit 32 bits for up to 65,535 items, which
    # halves the bytes that the sort moves.
    dtype = np.uint32 if n * n < 2**32 else np.int64
    items_np = items.numpy().astype(dtype)
    lengths_np = lengths.numpy()
    # Position of each click inside its sequence: (p, p + d) is a pair iff pos[p + d] >= d.
    pos = np.arange(len(items_np)) - np.repeat(np.cumsum(lengths_np) - lengths_np, lengths_np)
    keys = []
    for d in range(1, min(window, len(items_np) - 1) + 1):  # loop over window offsets only
        a, b = items_np[:-d], items_np[d:]
        keys.append((np.minimum(a, b) * dtype(n) + np.maximum(a, b))[pos[d:] >= d])
    key = np.concatenate(keys) if keys else np.zeros(0, dtype)
    if dtype is np.uint32:
        # torch sorts int32 about twice as fast as numpy sorts uint32; flipping the top bit
        # maps uint32 order onto int32 order.
        key = (key ^ np.uint32(1 << 31)).view(np.int32)
    key, count = (t.numpy() for t in torch.unique(torch.from_numpy(key), return_counts=True))
    if dtype is np.uint32:
        key = key.view(np.uint32) ^ np.uint32(1 << 31)
    key = key.astype(np.int64)
    lo, hi = key // n, key % n
    # Ordered entries Z[i, j]: both directions of each pair; a repeated item (lo == hi) counts
    # twice on the diagonal, as the literal double loop over (c, w) and (w, c) does.
    off = lo != hi
    row = np.concatenate([lo, hi[off]])
    col = np.concatenate([hi, lo[off]])
    count = np.concatenate([np.where(off, count, 2 * count), count[off]])

    # Top-K per row (count desc, then the smaller neighbour id), ranking only the rows that
    # have more than K entries; the others keep every entry.
    big = np.bincount(row, minlength=n)[row] > top_k
    idx = np.flatnonzero(big)
    c_max = int(count.max()) + 1 if len(count) else 1
    if n * n * c_max < 2**63:  # one sort of a composite key (row, -count, col)
        composite = (row[idx] * c_max + (c_max - count[idx])) * n + col[idx]
        ranked = idx[torch.sort(torch.from_numpy(composite))[1].numpy()]
    else:
        ranked = idx[np.lexsort((col[idx], -count[idx], row[idx]))]
    r = row[ranked]
    group = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, int)
    rank = np.arange(len(r)) - np.repeat(group, np.diff(np.r_[group, len(r)]))
    chosen = np.concatenate([np.flatnonzero(~big), ranked[rank < top_k]])
    chosen = chosen[torch.sort(torch.from_numpy(row[chosen]), stable=True)[1].numpy()]
    row, col, count = (torch.from_numpy(x[chosen].astype(np.int64)) for x in (row, col, count))
    return Data(
        edge_index=torch.stack([col, row]),
        edge_weight=count.to(torch.float32),
        num_nodes=n,
    )
