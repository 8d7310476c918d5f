import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.conv.spmm import (
    _compiled_scatter_messages,
    attend,
    compiled_scatter,
    spmm,
    transpose,
    with_transpose,
)

# Targets by sources: row 0 <- {0: 2.0, 2: 1.0}, row 1 <- nothing, row 2 <- {1: 0.5}.
CROW, COL, VAL = [0, 2, 2, 3], [0, 2, 1], [2.0, 1.0, 0.5]


def _adj():
    return torch.sparse_csr_tensor(torch.tensor(CROW), torch.tensor(COL), torch.tensor(VAL),
                                   (3, 3))


def test_spmm_sums_weighted_rows_and_sends_gradients_back():
    x = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 1.0]], requires_grad=True)
    out = spmm(_adj(), x)
    assert out.tolist() == [[5.0, 1.0], [0.0, 0.0], [0.0, 2.0]]
    out.backward(torch.tensor([[1.0, 1.0], [7.0, 7.0], [1.0, -1.0]]))
    # Source j receives the weight of each of its edges times its target's gradient.
    assert x.grad.tolist() == [[2.0, 2.0], [0.5, -0.5], [1.0, 1.0]]


def test_spmm_mean_unweighted_and_coo_input():
    x = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 1.0]])
    out = spmm(_adj().to_sparse_coo(), x, reduce="mean", weighted=False)
    assert out.tolist() == [[2.0, 0.5], [0.0, 0.0], [0.0, 4.0]]
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'mean', got 'max'"):
        spmm(_adj(), x, reduce="max")


def test_spmm_gradient_of_the_weights():
    x = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 1.0]])
    values = torch.tensor(VAL, requires_grad=True)
    adj = torch.sparse_csr_tensor(torch.tensor(CROW), torch.tensor(COL), values, (3, 3))
    spmm(adj, x).sum().backward()
    assert values.grad.tolist() == [1.0, 4.0, 4.0]  # the row sums of the edges' sources


def test_transpose_orders_the_edges_by_source():
    t = transpose(torch.tensor(CROW), torch.tensor(COL), 3)
    # Source 0 feeds target 0 (edge 0), source 1 target 2 (edge 2), source 2 target 0 (edge 1).
    assert t.ptr.tolist() == [0, 1, 2, 3]
    assert t.row.tolist() == [0, 2, 0]
    assert t.perm.tolist() == [0, 2, 1]


def test_spmm_backward_over_the_transpose_gives_the_same_gradients():
    x = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 1.0]], requires_grad=True)
    adj = with_transpose(_adj(), transpose(torch.tensor(CROW), torch.tensor(COL), 3))
    spmm(adj, x).backward(torch.tensor([[1.0, 1.0], [7.0, 7.0], [1.0, -1.0]]))
    assert x.grad.tolist() == [[2.0, 2.0], [0.5, -0.5], [1.0, 1.0]]


def test_attend_by_hand():
    # Target 0 <- sources {0, 2}; target 2 <- source 1; target 1 has no in-edges.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = attend(_adj(), x)
    # Scores of target 0: x0.x0 = 1 and x0.x2 = 1, so alpha = 1/2 each.
    assert torch.allclose(out, torch.tensor([[1.0, 0.5], [0.0, 0.0], [0.0, 1.0]]))


@st.composite
def _graphs(draw):
    n = draw(st.integers(1, 12))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=40, unique=True))
    return n, pairs, draw(st.integers(0, 2**16)), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(_graphs())
def test_fused_attention_equals_pyg_softmax_path(case):
    # Any graph (empty rows, self-loops, isolated nodes), with and without the transpose.
    n, pairs, seed, with_t = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.double, requires_grad=True)
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()
    edge_index = edge_index[:, torch.argsort(edge_index[1] * n + edge_index[0])]
    layer = DotAttentionConv(3, 3)
    upstream = torch.randn(n, 3, generator=gen, dtype=torch.double)
    out = layer(x, edge_index)
    (grad,) = torch.autograd.grad(out, x, upstream)
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.bincount(edge_index[1], minlength=n).cumsum(0)
    adj = torch.sparse_csr_tensor(crow, edge_index[0], torch.ones(len(pairs), dtype=torch.double),
                                  (n, n))
    if with_t:
        with_transpose(adj, transpose(crow, edge_index[0], n))
    out_fused = layer(x, adj)
    (grad_fused,) = torch.autograd.grad(out_fused, x, upstream)
    assert torch.allclose(out_fused, out, atol=1e-12)
    assert torch.allclose(grad_fused, grad, atol=1e-12)


def test_attend_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.double, requires_grad=True)
    crow, col = torch.tensor([0, 2, 2, 5, 6, 6, 8]), torch.tensor([1, 3, 0, 2, 5, 4, 0, 1])
    adj = torch.sparse_csr_tensor(crow, col, torch.ones(8, dtype=torch.double), (6, 6))
    assert torch.autograd.gradcheck(lambda v: attend(adj, v), (x,))
    adj_t = with_transpose(adj, transpose(crow, col, 6))
    assert torch.autograd.gradcheck(lambda v: attend(adj_t, v), (x,))


@pytest.mark.parametrize("conv", [MeanConv, GCNNormConv, DotAttentionConv])
def test_fused_layers_equal_their_edge_index_path(conv):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=gen, requires_grad=True)
    pairs = torch.randperm(900, generator=gen)[:120]  # distinct edges
    edge_index = torch.stack([pairs // 30, pairs % 30])
    weight = torch.rand(120, generator=gen) + 0.5
    layer = conv(4, 4)
    assert layer.fuse  # PyG routes a sparse adjacency to message_and_aggregate
    out = layer(x, edge_index, edge_weight=weight)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), weight, (30, 30)).coalesce()
    out_csr = layer(x, adj_t.to_sparse_csr())
    (grad_csr,) = torch.autograd.grad(out_csr.pow(2).sum(), x)
    assert torch.allclose(out_csr, out, atol=1e-5)
    assert torch.allclose(grad_csr, grad, atol=1e-5)


@pytest.mark.parametrize("weighted", [True, False])
def test_compiled_scatter_gives_the_eager_gradients(weighted):
    # Inside compiled_scatter the backward scatter is compiled (torch.compile); the gradients
    # must not change, for graphs of any size (the sizes stay symbolic).
    gen = torch.Generator().manual_seed(1)
    for num_nodes, num_edges in [(30, 120), (47, 300)]:
        x = torch.randn(num_nodes, 5, generator=gen, requires_grad=True)
        pairs = torch.randperm(num_nodes**2, generator=gen)[:num_edges].sort()[0]
        adj_t = torch.sparse_coo_tensor(
            torch.stack([pairs // num_nodes, pairs % num_nodes]),
            torch.rand(num_edges, generator=gen) + 0.5, (num_nodes, num_nodes),
        ).to_sparse_csr()
        upstream = torch.randn(num_nodes, 5, generator=gen)
        (eager,) = torch.autograd.grad(spmm(adj_t, x, weighted=weighted), x, upstream)
        with compiled_scatter():
            out = spmm(adj_t, x, weighted=weighted)
        calls = _compiled_scatter_messages.cache_info()
        (compiled,) = torch.autograd.grad(out, x, upstream)  # runs outside the context
        after = _compiled_scatter_messages.cache_info()
        assert after.hits + after.misses == calls.hits + calls.misses + 1  # the compiled kernel
        assert torch.allclose(compiled, eager, atol=1e-5)
        assert not torch.equal(eager, torch.zeros_like(eager))


@pytest.mark.parametrize("conv", [MeanConv, GCNNormConv, DotAttentionConv])
def test_a_pair_with_the_rows_adjacency_equals_the_square_graphs_rows(conv):
    # (x_src, x_dst) with the targets' CSR rows of the whole graph: the targets' outputs and
    # the gradients of the whole table equal the square propagation's.
    gen = torch.Generator().manual_seed(0)
    n, f = 12, 3
    pairs = torch.randperm(n * n, generator=gen)[:50]
    edge_index = torch.stack([pairs % n, pairs // n])
    edge_index = edge_index[:, torch.argsort(edge_index[1] * n + edge_index[0])]
    weight = torch.rand(50, generator=gen, dtype=torch.double) + 0.5
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.bincount(edge_index[1], minlength=n).cumsum(0)
    x = torch.randn(n, f, generator=gen, dtype=torch.double, requires_grad=True)
    layer, kwargs = conv(f, f), ({"normalized": True} if conv is GCNNormConv else {})
    rows = torch.tensor([7, 2, 9, 0])
    upstream = torch.randn(len(rows), f, generator=gen, dtype=torch.double)
    square = torch.sparse_csr_tensor(crow, edge_index[0], weight, (n, n))
    out = layer(x, square, **kwargs)[rows]
    (grad,) = torch.autograd.grad(out, x, upstream)
    start, count = crow[rows], crow[rows + 1] - crow[rows]
    e = torch.cat([torch.arange(s, s + c)
                   for s, c in zip(start.tolist(), count.tolist(), strict=True)])
    sub_crow = torch.cat([torch.zeros(1, dtype=torch.long), count.cumsum(0)])
    for with_t in (False, True):
        adj = torch.sparse_csr_tensor(sub_crow, edge_index[0, e], weight[e], (len(rows), n))
        if with_t:
            with_transpose(adj, transpose(sub_crow, edge_index[0, e], n))
        out_pair = layer((x, x[rows]), adj, **kwargs)
        (grad_pair,) = torch.autograd.grad(out_pair, x, upstream)
        assert torch.allclose(out_pair, out, atol=1e-12)
        assert torch.allclose(grad_pair, grad, atol=1e-12)
