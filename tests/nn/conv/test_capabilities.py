import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv, GINConv, LGConv, MessagePassing, SAGEConv

from resemb_pl.nn import ResEmbedding
from resemb_pl.nn.conv import (
    DotAttentionConv,
    GATAdapterConv,
    GCNAdapterConv,
    GCNNormConv,
    LGAdapterConv,
    MeanConv,
    SAGEAdapterConv,
    capabilities,
)

GRAPH = Data(edge_index=torch.tensor([[2, 3, 1, 3], [1, 1, 2, 2]]),
             edge_weight=torch.tensor([1.0, 2.0, 3.0, 1.0]), num_nodes=4)


@pytest.mark.parametrize(
    ("layer", "exact", "prenormalize", "edge_weight", "share", "bipartite", "target_index"),
    [
        (MeanConv(4, 4), True, False, True, 0.35, True, False),
        (DotAttentionConv(4, 4), True, False, True, 0.45, True, True),
        (GCNNormConv(4, 4), True, True, True, 0.35, True, False),
        # the layer's own option
        (GCNNormConv(4, 4, normalize=False), True, False, True, 0.35, True, False),
        (GCNAdapterConv(4, 4), True, True, True, 0.25, False, False),
        (LGAdapterConv(4, 4), True, True, True, 0.25, False, False),
        (GATAdapterConv(4, 4), True, False, True, 0.6, False, False),
        (SAGEAdapterConv(4, 4), True, False, True, 0.25, False, False),
        # PyG's built-ins, from the one table
        (GATConv(4, 4), True, False, False, 0.6, False, False),
        (SAGEConv(4, 4), True, False, False, 0.25, False, False),
        (GCNConv(4, 4), False, False, True, 0.25, False, False),
        (LGConv(), False, False, True, 0.25, False, False),
    ],
)
def test_declared_capabilities(layer, exact, prenormalize, edge_weight, share, bipartite,
                               target_index):
    assert tuple(capabilities(layer)) == (exact, prenormalize, edge_weight, share, bipartite,
                                          target_index)


def test_target_index_needs_bipartite():
    class Queries(MessagePassing):  # declares the index form without the pair form
        SUPPORTS_TARGET_INDEX = True

    class Pairs(Queries):
        SUPPORTS_BIPARTITE = True

    assert not capabilities(Queries()).target_index
    assert capabilities(Pairs()).target_index


class _Sum(MessagePassing):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(aggr="add")

    def forward(self, x, edge_index, edge_weight=None):
        return self.propagate(edge_index, x=x)


class _ExactSum(_Sum):
    EXACT_ON_SUBGRAPH = True


class _MyGAT(GATConv):  # a subclass of a built-in declares its own capabilities
    pass


def test_foreign_layers_default_to_inexact_and_subclasses_inherit():
    assert tuple(capabilities(_Sum(4, 4))) == (False, False, True, 0.25, False, False)
    assert tuple(capabilities(_ExactSum(4, 4))) == (True, False, True, 0.25, False, False)
    assert not capabilities(_MyGAT(4, 4)).exact_on_subgraph
    # A foreign forward without edge_weight (GINConv's third argument is size) is called
    # without it.
    assert not capabilities(GINConv(torch.nn.Identity())).edge_weight


def test_resembedding_follows_the_declarations():
    assert not ResEmbedding(3, 4, conv=_Sum)._use_local(torch.tensor([1]))
    with pytest.raises(ValueError, match=r"not exact for \['_Sum'\].*EXACT_ON_SUBGRAPH"):
        ResEmbedding(3, 4, conv=_Sum, propagation="local")
    torch.manual_seed(0)
    emb = ResEmbedding(3, 4, conv=_ExactSum, num_layers=2, propagation="local")
    emb.set_graph(GRAPH)
    rows = torch.tensor([1, 2])
    assert torch.allclose(emb.central(rows), emb.central_table()[rows], atol=1e-6)
    # GIN is called without edge_weight, over the whole graph.
    gin = ResEmbedding(3, 4, conv=lambda i, o: GINConv(torch.nn.Linear(i, o)))
    gin.set_graph(GRAPH)
    assert gin(torch.tensor([1, 2, 3])).shape == (3, 4)


def test_prenormalising_layers_are_not_changed_from_outside():
    emb = ResEmbedding(3, 4, conv=GCNNormConv, propagation="local")
    emb.set_graph(GRAPH)
    assert emb.convs[0].normalize is True
    # The stored weights are the whole graph's normalisation: d_1 = 3, d_2 = 4.
    ei, w = GCNNormConv(4, 4).normalize_graph(GRAPH.edge_index, GRAPH.edge_weight, 4)
    stored = dict(zip(map(tuple, emb.edge_index.T.tolist()), emb.edge_weight.tolist(),
                      strict=True))
    assert stored == pytest.approx(dict(zip(map(tuple, ei.T.tolist()), w.tolist(), strict=True)))
    # ... and the layer normalises by itself when used alone: same rows as the embedding.
    rows = torch.tensor([1, 2])
    alone = GCNNormConv(4, 4)(emb.basis.weight, GRAPH.edge_index, GRAPH.edge_weight)
    assert torch.allclose(emb.central(rows), alone[rows], atol=1e-6)
