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
        ``[1]`` the item ``i``, sorted by ``i`` then by falling count then by ``j``),
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
    seq = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)

    # All ordered pairs (c, w) with 0 < |w - c| <= window inside one sequence: for each offset d,
    # the pair (p, p + d) and its mirror.
    keys = []
    for d in range(1, window + 1):  # loop over the window offsets only
        same = seq[d:] == seq[:-d] if d < items.numel() else torch.zeros(0, dtype=torch.bool)
        a, b = items[:-d][same], items[d:][same]
        keys.append(a * n + b)
        keys.append(b * n + a)
    if keys:
        key = torch.cat(keys)
    else:
        key = torch.zeros(0, dtype=torch.int64)
    key, count = torch.unique(key, sorted=True, return_counts=True)
    row, col = key // n, key % n  # row = item i, col = neighbour j

    # Top-K per row: order by (row asc, count desc, col asc). ``key`` is sorted by (row, col),
    # so one stable sort on (row, -count) gives the tie rule for free.
    order = torch.sort(row * (int(count.max()) + 1 if count.numel() else 1) - count, stable=True)[1]
    row, col, count = row[order], col[order], count[order]
    start = torch.searchsorted(row, row, right=False)
    keep = torch.arange(row.numel()) - start < top_k
    row, col, count = row[keep], col[keep], count[keep]
    return Data(
        edge_index=torch.stack([col, row]),
        edge_weight=count.to(torch.float32),
        num_nodes=n,
    )
