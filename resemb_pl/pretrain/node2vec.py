"""+n2v: node2vec (Grover & Leskovec, KDD 2016) over the item interest graph (paper, Table 3).

The biased second-order walks are sampled here, vectorised in torch over all walkers, by
rejection (as in KnightKing and pyg-lib), because PyG's ``Node2Vec`` needs ``pyg-lib``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from resemb_pl.pretrain.sgns import SkipGram, pretrain_table, window_pairs


def random_walks(
    data: Data,
    walk_length: int,
    walks_per_node: int = 1,
    *,
    p: float = 1.0,
    q: float = 1.0,
    generator: torch.Generator | None = None,
    max_tries: int = 100,
) -> Tensor:
    r"""node2vec walks from every node with at least one neighbour.

    From ``v``, having come from ``t``, the walk moves to a neighbour ``x`` of ``v`` with
    probability proportional to :math:`Z_{vx} \cdot \alpha_{pq}(t, x)`, where
    :math:`\alpha = 1/p` if ``x = t``, 1 if ``x`` is a neighbour of ``t`` and :math:`1/q`
    otherwise. The neighbours of ``i`` are the sources of the edges ``j -> i``. A walk that
    reaches a node without neighbours ends; its remaining entries are ``-1``.

    Args:
        data: The graph (``edge_index``, optional ``edge_weight``, ``num_nodes``).
        walk_length: Number of nodes in a walk, the start included.
        walks_per_node: Walks started from each node.
        p: Return parameter.
        q: In-out parameter.
        generator: Random generator.
        max_tries: Rejection rounds per step; a walker still rejected then takes its last
            proposal.

    Returns:
        ``(num_walks, walk_length)`` node ids.
    """
    n = int(data.num_nodes)
    src, dst = data.edge_index
    weight = data.edge_weight if data.edge_weight is not None else torch.ones(src.numel())
    order = torch.argsort(dst * n + src)
    nbr, key, weight = src[order], (dst * n + src)[order], weight[order].double()
    count = torch.bincount(dst, minlength=n)
    rowptr = torch.cat([count.new_zeros(1), count.cumsum(0)])
    cum = torch.cat([weight.new_zeros(1), weight.cumsum(0)])

    def propose(v: Tensor) -> Tensor:
        lo, hi = cum[rowptr[v]], cum[rowptr[v + 1]]
        u = lo + torch.rand(v.numel(), generator=generator, dtype=torch.float64) * (hi - lo)
        idx = torch.searchsorted(cum, u, right=True) - 1
        return nbr[torch.minimum(torch.maximum(idx, rowptr[v]), rowptr[v + 1] - 1)]

    def is_neighbour(t: Tensor, x: Tensor) -> Tensor:
        k = t * n + x
        pos = torch.searchsorted(key, k).clamp_max(max(key.numel() - 1, 0))
        return key[pos] == k if key.numel() else torch.zeros_like(k, dtype=torch.bool)

    start = torch.nonzero(count > 0).view(-1).repeat(walks_per_node)
    walks = torch.full((start.numel(), walk_length), -1, dtype=torch.long)
    walks[:, 0] = start
    bound = max(1.0, 1.0 / p, 1.0 / q)
    for step in range(1, walk_length):
        alive = torch.nonzero(walks[:, step - 1] >= 0).view(-1)
        alive = alive[count[walks[alive, step - 1]] > 0]
        v = walks[alive, step - 1]
        if step == 1:
            walks[alive, step] = propose(v)
            continue
        t = walks[alive, step - 2]
        pending = torch.arange(alive.numel())
        chosen = torch.empty_like(v)
        for _ in range(max_tries):
            x = propose(v[pending])
            chosen[pending] = x
            alpha = torch.where(
                x == t[pending], 1.0 / p, torch.where(is_neighbour(t[pending], x), 1.0, 1.0 / q)
            )
            accept = torch.rand(pending.numel(), generator=generator) * bound < alpha
            pending = pending[~accept]
            if pending.numel() == 0:
                break
        walks[alive, step] = chosen
    return walks


def pretrain_node2vec(
    data: Data,
    num_items: int,
    embedding_dim: int = 18,
    *,
    walk_length: int = 20,
    walks_per_node: int = 10,
    p: float = 1.0,
    q: float = 1.0,
    window: int = 5,
    epochs: int = 5,
    batch_size: int = 1024,
    lr: float = 0.01,
    num_negatives: int = 5,
    seed: int = 0,
) -> tuple[Tensor, list[float]]:
    """Sample node2vec walks on the interest graph and fit skip-gram on them.

    Returns:
        The item table ``(num_items + 1, embedding_dim)`` and the epoch losses.
    """
    generator = torch.Generator().manual_seed(seed)
    walks = random_walks(data, walk_length, walks_per_node, p=p, q=q, generator=generator)
    return pretrain_table(lambda: SkipGram(num_items, embedding_dim),
                          window_pairs(walks.numpy(), window), num_items, seed=seed,
                          epochs=epochs, batch_size=batch_size, lr=lr,
                          num_negatives=num_negatives)
