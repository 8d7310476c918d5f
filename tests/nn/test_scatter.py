"""PyG uses torch-scatter for some reductions when it is installed; results must not change.

CI installs the ``scatter`` extra, so these run there. On a CPU, PyG 2.8 calls torch-scatter only
for segment reductions over a row pointer, which our layers get from a target-sorted
``EdgeIndex`` or a CSR adjacency (DotAttentionConv's softmax, also in the res-embedding step);
the plain ``edge_index`` path and the other layers never call it (README, "torch-scatter";
``scripts/bench_scatter.py`` times both).
"""

import functools

import pytest
import torch
import torch_geometric.typing
from torch_geometric import EdgeIndex

from resemb_pl.data.graph import build_interest_graph
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.embedding import ResEmbedding

pytestmark = pytest.mark.skipif(
    not torch_geometric.typing.WITH_TORCH_SCATTER,
    reason="torch-scatter is not installed (the `scatter` extra: pip install "
    "--no-build-isolation torch-scatter, after torch)",
)

CONVS = [MeanConv, GCNNormConv, DotAttentionConv]


@pytest.fixture
def scatter_calls(monkeypatch):
    """Counts the calls into torch-scatter's public functions (PyG looks them up per call)."""
    import torch_scatter

    calls = []
    for name in ("scatter", "segment_csr", "segment_coo", "scatter_max", "scatter_min",
                 "scatter_mul", "gather_csr"):
        fn = getattr(torch_scatter, name)

        @functools.wraps(fn)
        def counted(*args, _fn=fn, _name=name, **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)

        monkeypatch.setattr(torch_scatter, name, counted)
    return calls


def _graph(sorted_index: bool):
    torch.manual_seed(0)
    edge_index = torch.randint(0, 50, (2, 300))
    edge_index = edge_index[:, torch.argsort(edge_index[1] * 50 + edge_index[0])]
    edge_weight = torch.rand(300) + 0.5
    if sorted_index:  # hands PyG the row pointer of the targets
        edge_index = EdgeIndex(edge_index, sparse_size=(50, 50), sort_order="col")
    return edge_index, edge_weight


def _run(layer, x, edge_index, edge_weight):
    out = layer(x, edge_index, edge_weight=edge_weight)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    return out, grad


@pytest.mark.parametrize("sorted_index", [False, True], ids=["edge_index", "EdgeIndex"])
@pytest.mark.parametrize("conv", CONVS)
def test_torch_scatter_path_equals_pure_torch(conv, sorted_index, monkeypatch, scatter_calls):
    edge_index, edge_weight = _graph(sorted_index)
    x = torch.randn(50, 8, requires_grad=True)
    layer = conv(8, 8)
    with_scatter = _run(layer, x, edge_index, edge_weight)
    used = len(scatter_calls)
    monkeypatch.setattr(torch_geometric.typing, "WITH_TORCH_SCATTER", False)
    scatter_calls.clear()
    without = _run(layer, x, edge_index, edge_weight)
    assert scatter_calls == []
    torch.testing.assert_close(with_scatter[0], without[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_scatter[1], without[1], atol=1e-5, rtol=1e-5)
    # Where torch-scatter is used at all: the softmax's segment reductions over the row pointer.
    assert (used > 0) == (conv is DotAttentionConv and sorted_index)


@pytest.mark.parametrize("conv", CONVS)
def test_res_embedding_step_with_and_without_torch_scatter(conv, scatter_calls, monkeypatch):
    # The eager path (the compiled CSR loops, where built, use no torch-scatter at all).
    monkeypatch.setenv("RESEMB_PL_NATIVE", "0")
    items = torch.randint(1, 41, (400,))
    graph = build_interest_graph(items, torch.full((40,), 10), num_items=40)
    emb = ResEmbedding(40, 8, conv=conv)
    emb.set_graph(graph)
    ids = torch.randint(0, 41, (16, 6))

    def step():
        emb.zero_grad()
        (emb(ids).pow(2).sum() + emb.central_table().pow(2).sum()).backward()
        return emb.basis.weight.grad.clone()

    with_scatter = step()
    assert with_scatter.abs().sum() > 0
    # Only the fused attention's softmax reduces segments (over the CSR row pointer).
    assert set(scatter_calls) == ({"segment_csr"} if conv is DotAttentionConv else set())
    monkeypatch.setattr(torch_geometric.typing, "WITH_TORCH_SCATTER", False)
    scatter_calls.clear()
    without = step()
    assert scatter_calls == []
    torch.testing.assert_close(with_scatter, without, atol=1e-6, rtol=1e-5)
