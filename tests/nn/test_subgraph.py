import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resemb_pl.nn.subgraph import distinct, in_subgraph


def csr(edges: list[tuple[int, int]], num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row pointer and sources of the edges ``(source, target)``, sorted by target."""
    edges = sorted(edges, key=lambda e: (e[1], e[0]))
    col = torch.tensor([s for s, _ in edges], dtype=torch.long)
    counts = torch.bincount(torch.tensor([t for _, t in edges], dtype=torch.long),
                            minlength=num_nodes)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), col


def global_edges(sub, col, rowptr):
    """The subgraph's edges as global ``(source, target)`` pairs, checked against ``edge_id``."""
    source, target = sub.nodes[sub.edge_index[0]], sub.nodes[sub.edge_index[1]]
    assert torch.equal(source, col[sub.edge_id])  # edge_id points at the same edge
    full_target = torch.repeat_interleave(torch.arange(rowptr.numel() - 1), rowptr.diff())
    assert torch.equal(target, full_target[sub.edge_id])
    return sorted(zip(source.tolist(), target.tolist(), strict=True))


def check_csr(sub):
    """Edges sorted by local target and the row pointer agreeing with them."""
    counts = torch.bincount(sub.edge_index[1], minlength=sub.nodes.numel())
    assert torch.equal(sub.rowptr, torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
    assert bool((sub.edge_index[1].diff() >= 0).all())


# Hand-made graph (edges source -> target): 1 <- 2, 1 <- 3, 2 <- 4, 3 <- 4, 4 <- 5, 6 <- 1.
EDGES = [(2, 1), (3, 1), (4, 2), (4, 3), (5, 4), (1, 6)]


def test_in_subgraph_on_a_hand_made_graph():
    rowptr, col = csr(EDGES, 7)
    one = in_subgraph(rowptr, col, torch.tensor([1]), hops=1)
    assert one.nodes[0] == 1
    assert sorted(one.nodes.tolist()) == [1, 2, 3]
    assert global_edges(one, col, rowptr) == [(2, 1), (3, 1)]
    check_csr(one)
    two = in_subgraph(rowptr, col, torch.tensor([1]), hops=2)
    assert sorted(two.nodes.tolist()) == [1, 2, 3, 4]
    assert global_edges(two, col, rowptr) == [(2, 1), (3, 1), (4, 2), (4, 3)]
    assert two.nodes.numel() == 4  # 4 is read twice but is one node
    check_csr(two)
    # Two rows, given in this order, come first; 6's in-edge reads 1, which is a row already.
    both = in_subgraph(rowptr, col, torch.tensor([6, 4]), hops=1)
    assert both.nodes[:2].tolist() == [6, 4]
    assert sorted(both.nodes.tolist()) == [1, 4, 5, 6]
    assert global_edges(both, col, rowptr) == [(1, 6), (5, 4)]
    check_csr(both)
    # A node without in-edges: itself only.
    alone = in_subgraph(rowptr, col, torch.tensor([5]), hops=3)
    assert alone.nodes.tolist() == [5]
    assert alone.edge_index.shape == (2, 0)
    assert alone.rowptr.tolist() == [0, 0]


def test_in_subgraph_refuses_zero_hops():
    rowptr, col = csr(EDGES, 7)
    with pytest.raises(ValueError, match="hops must be at least 1"):
        in_subgraph(rowptr, col, torch.tensor([1]), hops=0)


def test_distinct():
    items = torch.tensor([[5, 2, 0], [5, 0, 3]])
    values, inverse = distinct(items, 6)
    assert sorted(values.tolist()) == [0, 2, 3, 5]
    assert inverse.shape == items.shape
    assert torch.equal(values[inverse], items)


def bfs(edges, rows, hops):
    """Brute force: nodes within ``hops`` in-hops of ``rows`` and the in-edges of those within
    ``hops - 1``."""
    inn: dict[int, list[int]] = {}
    for s, t in edges:
        inn.setdefault(t, []).append(s)
    level, seen, targets = set(rows), set(rows), set()
    for _ in range(hops):
        targets |= level
        level = {s for t in level for s in inn.get(t, [])} - seen
        seen |= level
    picked = sorted((s, t) for s, t in edges if t in targets)
    return seen | {s for s, _ in picked}, picked


@settings(max_examples=60, deadline=None)
@given(
    num_nodes=st.integers(1, 12),
    data=st.data(),
    hops=st.integers(1, 3),
)
def test_in_subgraph_equals_brute_force_bfs(num_nodes, data, hops):
    pair = st.tuples(st.integers(0, num_nodes - 1), st.integers(0, num_nodes - 1))
    edges = sorted(set(data.draw(st.lists(pair, max_size=30))))
    rows = data.draw(st.lists(st.integers(0, num_nodes - 1), min_size=1, unique=True))
    rowptr, col = csr(edges, num_nodes)
    sub = in_subgraph(rowptr, col, torch.tensor(rows), hops)
    nodes, picked = bfs(edges, rows, hops)
    assert sub.nodes[: len(rows)].tolist() == rows
    assert sub.nodes.unique().numel() == sub.nodes.numel()  # each node once
    assert set(sub.nodes.tolist()) == nodes
    assert global_edges(sub, col, rowptr) == picked
    check_csr(sub)
    values, inverse = distinct(torch.tensor(rows + rows), num_nodes)
    assert sorted(values.tolist()) == sorted(rows)
    assert values[inverse].tolist() == rows + rows
