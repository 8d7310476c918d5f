"""Sort-free k-hop extraction on a CSR graph, for batch-local propagation.

A graph sorted by target (CSR) is given by ``rowptr`` (one entry per node, plus one) and
``col`` (the source of every edge): the in-edges of node ``i`` are ``rowptr[i]:rowptr[i + 1]``.
Both functions below number nodes through a scratch map the size of the graph that they make
for the call and never read before writing, so no state survives a call and nothing is sorted.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Subgraph(NamedTuple):
    """The ``hops``-hop in-neighbourhood of some rows, relabelled, in CSR order.

    Attributes:
        nodes: The node ids of the subgraph ``(N,)``: the rows first, in their order, then the
            nodes each hop adds. Local node ``k`` is ``nodes[k]``.
        rowptr: CSR row pointer over the local nodes ``(N + 1,)``; nodes whose in-edges are not
            needed (the last hop's sources) have none.
        edge_index: Local ``(source, target)`` of every edge ``(2, E)``, sorted by target.
        edge_id: Position of every edge in the whole graph's ``col`` ``(E,)``: pick its weight
            with ``edge_weight[edge_id]``.
    """

    nodes: Tensor
    rowptr: Tensor
    edge_index: Tensor
    edge_id: Tensor


def distinct(items: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The distinct values of ``items`` (ids below ``num_nodes``) and the inverse map, unsorted.

    Args:
        items: Node ids of any shape.
        num_nodes: An upper bound of the ids plus one (the size of the scratch map).

    Returns:
        ``(values, inverse)``: the distinct ids ``(U,)`` in no particular order, and
        ``inverse`` of the shape of ``items`` with ``values[inverse] == items``.

    Example::

        values, inverse = distinct(torch.tensor([[5, 2], [5, 0]]), num_nodes=6)
        torch.equal(values[inverse], torch.tensor([[5, 2], [5, 0]]))  # True
    """
    flat = items.reshape(-1)
    position = flat.new_empty(num_nodes)
    values = _new(position, flat)
    return values, position.index_select(0, flat).view(items.shape)


def in_subgraph(rowptr: Tensor, col: Tensor, rows: Tensor, hops: int) -> Subgraph:
    """The in-edges that ``hops`` layers of message passing need to compute ``rows``.

    The subgraph holds the in-edges of every node within ``hops - 1`` hops of ``rows`` (against
    the edges' direction) and the nodes they read, so a layer whose output for a node depends
    only on the node and its in-edges gives the same output for ``rows`` on the subgraph as on
    the whole graph. Each hop's new nodes are numbered after the previous ones, so the targets
    of every hop's edges are a range of positions and the edges come out in CSR order without a
    sort.

    Args:
        rowptr: CSR row pointer of the graph ``(num_nodes + 1,)``.
        col: Source of every edge, in CSR order ``(num_edges,)``.
        rows: Distinct node ids ``(R,)`` whose outputs are wanted.
        hops: Number of layers (at least 1).

    Returns:
        A :class:`Subgraph`; ``nodes[:R]`` is ``rows``.

    Example::

        # the chain 3 -> 2 -> 1 (edges j -> i, CSR by target)
        rowptr, col = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([2, 3])
        sub = in_subgraph(rowptr, col, torch.tensor([1]), hops=2)
        sub.nodes       # [1, 2, 3]
        sub.edge_index  # [[1, 2], [0, 1]]: 2 -> 1 and 3 -> 2 in local ids
    """
    if hops < 1:
        raise ValueError(f"in_subgraph: hops must be at least 1, got {hops}")
    device = rows.device
    position = rows.new_empty(rowptr.numel() - 1)
    position.scatter_(0, rows, torch.arange(rows.numel(), device=device))
    nodes, frontier, first = [rows], rows, 0
    sources, targets, edges, counts = [], [], [], []
    for hop in range(hops):
        e, count, slot = in_edges(rowptr, frontier)
        sources.append(col.index_select(0, e))
        targets.append(slot.add_(first))  # the edges of frontier[k] target position first + k
        edges.append(e)
        counts.append(count)
        first += frontier.numel()
        if hop + 1 < hops:  # the next hop's targets: the sources not seen yet
            frontier = _new(position, sources[-1], torch.cat(nodes), first)
            nodes.append(frontier)
    # The last hop's sources add the nodes that are only read; then every node has its position.
    nodes.append(_new(position, sources[-1], torch.cat(nodes), first))
    all_nodes = _cat(nodes)
    edge_index = torch.stack([position.index_select(0, _cat(sources)), _cat(targets)])
    local_rowptr = torch.zeros(all_nodes.numel() + 1, dtype=torch.long, device=device)
    torch.cumsum(_cat(counts), 0, out=local_rowptr[1 : first + 1])
    local_rowptr[first + 1 :] = local_rowptr[first]
    return Subgraph(all_nodes, local_rowptr, edge_index, _cat(edges))


def _new(position: Tensor, items: Tensor, seen: Tensor | None = None, start: int = 0) -> Tensor:
    """The distinct values of the 1-D ``items`` that are not in ``seen``, in no order.

    ``position`` must send ``seen[k]`` to ``k`` (and ``len(seen) <= start``); afterwards it also
    sends the ``k``-th returned value to ``start + k``. Every item writes a tentative position,
    ``seen`` write theirs back over it, and the items whose write stayed are kept, one per
    distinct value: two passes over ``items``, without a sort.
    """
    order = torch.arange(start, start + items.numel(), device=items.device)
    position.scatter_(0, items, order)
    if seen is not None:
        position.scatter_(0, seen, torch.arange(seen.numel(), device=items.device))
    kept = items.masked_select(position.index_select(0, items) == order)
    position.scatter_(0, kept, order[: kept.numel()])
    return kept


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def in_edges(rowptr: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The CSR ranges of ``targets`` concatenated: edge ids, the count per target, and the
    index in ``targets`` of each edge's target.

    Example::

        # in-edges 0:2 of node 1 and 2:3 of node 2
        in_edges(torch.tensor([0, 0, 2, 3]), torch.tensor([2, 1]))  # [2, 0, 1], [1, 2], [0, 1, 1]
    """
    start = rowptr.index_select(0, targets)
    count = rowptr[1:].index_select(0, targets) - start
    slot = torch.repeat_interleave(count)
    offset = (start - (count.cumsum(0) - count)).index_select(0, slot)
    return offset.add_(torch.arange(slot.numel(), device=targets.device)), count, slot
