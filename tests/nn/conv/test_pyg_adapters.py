import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, LGConv, SAGEConv

from resemb_pl.nn import ResEmbedding
from resemb_pl.nn.conv import (
    GATAdapterConv,
    GATv2AdapterConv,
    GCNAdapterConv,
    LGAdapterConv,
    SAGEAdapterConv,
    capabilities,
)

EDGES = torch.tensor([[2, 3, 1, 3, 1, 2, 4], [1, 1, 2, 2, 3, 3, 3]])
WEIGHTS = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 2.0, 5.0])
GRAPH = Data(edge_index=EDGES, edge_weight=WEIGHTS, num_nodes=5)


@pytest.mark.parametrize("layer", [GCNAdapterConv, GATAdapterConv, GATv2AdapterConv,
                                   SAGEAdapterConv, LGAdapterConv])
def test_adapter_follows_the_contract(layer):
    torch.manual_seed(0)
    conv = layer(8, 8)
    x = torch.randn(5, 8)
    assert conv(x, EDGES, edge_weight=WEIGHTS).shape == (5, 8)
    assert conv(x, EDGES).shape == (5, 8)


@pytest.mark.parametrize("layer", [GATAdapterConv, GATv2AdapterConv])
def test_attention_adapters_see_the_edge_weight(layer):
    torch.manual_seed(0)
    conv, x = layer(8, 8, heads=2), torch.randn(5, 8)
    assert not torch.allclose(conv(x, EDGES, WEIGHTS), conv(x, EDGES, WEIGHTS.flip(0)))
    blind = layer(8, 8, use_edge_weight=False)
    assert torch.allclose(blind(x, EDGES, WEIGHTS), blind(x, EDGES, WEIGHTS.flip(0)))
    with pytest.raises(ValueError, match="not a multiple of heads"):
        layer(8, 8, heads=3)


def test_sage_and_lg_adapters_equal_the_builtins():
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    sage = SAGEAdapterConv(8, 8)
    builtin = SAGEConv(8, 8)
    builtin.load_state_dict(sage.state_dict())
    assert torch.allclose(sage(x, EDGES, WEIGHTS), builtin(x, EDGES))
    assert torch.allclose(LGAdapterConv(8, 8)(x, EDGES, WEIGHTS), LGConv()(x, EDGES, WEIGHTS))
    assert str(LGAdapterConv(8, 8)) == "LGAdapterConv(8, 8)"
    with pytest.raises(ValueError, match="keeps the width"):
        LGAdapterConv(8, 4)


@pytest.mark.parametrize("layer", [GCNAdapterConv, LGAdapterConv, GATAdapterConv, SAGEConv,
                                   GATConv])
def test_batch_local_propagation_equals_full_graph(layer):
    torch.manual_seed(0)
    emb = ResEmbedding(4, 8, conv=layer, num_layers=2, propagation="local")
    emb.set_graph(GRAPH)
    ids = torch.tensor([1, 3])
    assert torch.allclose(emb.central(ids), emb.central_table()[ids], atol=1e-5)


def test_builtins_without_edge_weight_are_called_without_it():
    # GATConv's third argument is edge_attr and SAGEConv's is size: neither gets the weights.
    for layer in (GATConv, SAGEConv):
        emb = ResEmbedding(4, 8, conv=layer, propagation="full")
        emb.set_graph(GRAPH)
        assert emb(torch.tensor([1, 2, 3])).shape == (3, 8)


def test_gcn_adapter_normalises_once_on_the_whole_graph():
    emb = ResEmbedding(4, 8, conv=GCNAdapterConv)
    emb.set_graph(GRAPH)
    # The layer keeps its own option; it declares that it pre-normalises, and is told so per call.
    assert emb.convs[0].normalize is True
    assert capabilities(emb.convs[0]).prenormalize
    # gcn_norm adds one self-loop per node, 0 included: 7 edges + 5 loops.
    assert emb.edge_index.size(1) == 12
    x = torch.randn(5, 8)
    ref = GCNAdapterConv(8, 8)
    ref.load_state_dict(emb.convs[0].state_dict())
    with torch.no_grad():
        emb.basis.weight.copy_(x)
    assert torch.allclose(emb.central_table(), ref(x, EDGES, WEIGHTS), atol=1e-5)
