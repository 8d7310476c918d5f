import pytest
import torch
from torch_geometric.data import Data

from resemb_pl.data.graph import build_interest_graph
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.embedding import ResEmbedding

CONVS = [MeanConv, GCNNormConv, DotAttentionConv]


def _graph(num_items: int = 60, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items + 1, (600,), generator=g)
    lengths = torch.full((60,), 10)
    return build_interest_graph(items.numpy(), lengths.numpy(), num_items, window=2, top_k=4)


def _pair(conv, num_layers: int, self_loops: bool, graph: Data) -> tuple[ResEmbedding, ...]:
    kwargs = {"conv": conv, "num_layers": num_layers, "self_loops": self_loops}
    full = ResEmbedding(60, 8, propagation="full", **kwargs)
    local = ResEmbedding(60, 8, propagation="local", **kwargs)
    local.load_state_dict(full.state_dict(), strict=False)
    with torch.no_grad():
        full.residual.weight.normal_()
        full.residual.weight[0].zero_()
    local.residual.load_state_dict(full.residual.state_dict())
    full.set_graph(graph)
    local.set_graph(graph)
    return full, local


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("self_loops", [False, True])
def test_local_equals_full(conv, num_layers, self_loops):
    graph = _graph()
    full, local = _pair(conv, num_layers, self_loops, graph)
    ids = torch.tensor([[3, 7, 7, 0], [59, 1, 12, 3]])
    out_full, out_local = full(ids), local(ids)
    assert out_full.shape == (2, 4, 8)
    assert torch.allclose(out_local, out_full, atol=1e-6)
    # The central part of every item, computed batch-locally, equals full propagation.
    rows = torch.arange(1, 61)
    assert torch.allclose(local.central(rows), full.central_table()[rows], atol=1e-6)
    rows = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:25] + 1  # any order
    assert torch.allclose(local.central(rows), full.central_table()[rows], atol=1e-6)
    # Padding embeds to zero either way.
    assert out_local[0, 3].abs().max() == 0
    # Gradients reach the same basis rows with the same values.
    out_full.pow(2).sum().backward()
    out_local.pow(2).sum().backward()
    assert torch.allclose(local.basis.weight.grad, full.basis.weight.grad, atol=1e-6)
    touched = local.basis.weight.grad.abs().sum(1) > 0
    assert 0 < int(touched.sum()) < 61  # only the batch's neighbourhood gets a gradient


def test_local_two_hops_reaches_beyond_one_hop():
    # A chain 1 <- 2 <- 3 (edges j -> i): item 1's 2-layer central vector depends on item 3.
    edge_index = torch.tensor([[2, 3], [1, 2]])
    graph = Data(edge_index=edge_index, edge_weight=torch.ones(2), num_nodes=4)
    emb = ResEmbedding(3, 4, conv=MeanConv, num_layers=2, propagation="local")
    emb.set_graph(graph)
    assert torch.allclose(emb.central(torch.tensor([1])), emb.basis.weight[3:4], atol=1e-7)
    emb1 = ResEmbedding(3, 4, conv=MeanConv, num_layers=1, propagation="local")
    emb1.load_state_dict(emb.state_dict(), strict=False)
    emb1.set_graph(graph)
    assert torch.allclose(emb1.central(torch.tensor([1])), emb.basis.weight[2:3], atol=1e-7)
    # An item without in-edges has a zero central part.
    assert emb1.central(torch.tensor([3])).abs().max() == 0


def test_gcn_local_uses_whole_graph_degrees():
    # Item 1 <- 2 with weight 1, item 2 has a second in-neighbour 3 with weight 3, so d_2 = 4.
    edge_index = torch.tensor([[2, 3, 1], [1, 2, 2]])
    graph = Data(edge_index=edge_index, edge_weight=torch.tensor([1.0, 3.0, 1.0]), num_nodes=4)
    emb = ResEmbedding(3, 2, conv=GCNNormConv, propagation="local")
    emb.set_graph(graph)
    # d_1 = 1 (row sum of Z[1]), d_2 = 4: weight of 2 -> 1 is 1 / sqrt(1 * 4) = 0.5.
    expected = 0.5 * emb.basis.weight[2]
    assert torch.allclose(emb.central(torch.tensor([1]))[0], expected, atol=1e-7)


@pytest.mark.parametrize("conv", CONVS)
def test_auto_picks_by_rule(conv):
    graph = _graph()
    emb = ResEmbedding(60, 8, conv=conv, propagation="auto")
    emb.set_graph(graph)
    num_edges = emb.edge_index.size(1)
    share = 0.45 if conv is DotAttentionConv else 0.35
    # Rule (one layer): local when the rows' in-edges are fewer than LOCAL_SHARE of the edges.
    degree = emb.rowptr.diff()
    order = torch.argsort(degree[1:], descending=True) + 1
    within = torch.cumsum(degree[order], 0) < share * num_edges
    small, large = order[within], order[: int(within.sum()) + 1]
    assert emb._use_local(small)
    assert not emb._use_local(large)
    # The same rows in any order, and the padding row, count the same.
    assert emb._use_local(torch.cat([small.flip(0), torch.zeros(1, dtype=torch.long)]))
    assert not ResEmbedding(60, 8, conv=conv, propagation="full")._use_local(small)
    # Either way the output is the full graph's (to 1e-6).
    full = ResEmbedding(60, 8, conv=conv, propagation="full")
    full.load_state_dict(emb.state_dict())
    for rows in (small, large):
        assert torch.allclose(emb(rows), full(rows), atol=1e-6)


def test_local_refuses_layers_that_need_the_whole_graph():
    from torch_geometric.nn import LGConv

    with pytest.raises(ValueError, match=r"propagation='local' is not exact for \['LGConv'\]"):
        ResEmbedding(10, 4, conv=lambda i, o: LGConv(), propagation="local")
    emb = ResEmbedding(10, 4, conv=lambda i, o: LGConv(), propagation="auto")
    assert not emb._use_local(torch.ones(1, dtype=torch.long))
