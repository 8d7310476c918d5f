"""The compiled CSR loops (resemb_pl.nn.conv.native) against the eager paths and PyG."""

import contextlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv, native
from resemb_pl.nn.conv.spmm import _scatter_messages, attend, csr_adjacency, spmm
from resemb_pl.nn.embedding import ResEmbedding
from resemb_pl.nn.subgraph import in_edges

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler here")


@st.composite
def _csr(draw):
    """A CSR adjacency of targets by sources (empty rows, self-loops, sources in any order;
    each edge once, as a graph's are)."""
    targets, sources = draw(st.integers(1, 9)), draw(st.integers(1, 12))
    ranges = [draw(st.lists(st.integers(0, sources - 1), max_size=6, unique=True))
              for _ in range(targets)]
    col = [j for r in ranges for j in r]
    crow = torch.zeros(targets + 1, dtype=torch.long)
    crow[1:] = torch.tensor([len(r) for r in ranges]).cumsum(0)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    # Any width, and the ones csr_kernels.c compiles with a constant (8, 16, 18, 32, 64) with
    # their neighbours on either side.
    width = draw(st.one_of(st.integers(1, 20), st.sampled_from([31, 32, 33, 63, 64, 65])))
    seed = draw(st.integers(0, 99))
    return crow, torch.tensor(col, dtype=torch.long), sources, width, dtype, seed


def _adj(crow, col, sources, values):
    return csr_adjacency(crow, col, values, (crow.numel() - 1, sources))


def _tol(dtype):
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-12,
                                                                        "rtol": 1e-10}


@settings(max_examples=80, deadline=None)
@given(_csr())
def test_attention_equals_the_eager_path_and_pyg(case):
    crow, col, sources, width, dtype, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sources, width, generator=gen, dtype=dtype, requires_grad=True)
    q = torch.randn(crow.numel() - 1, width, generator=gen, dtype=dtype, requires_grad=True)
    upstream = torch.randn(q.shape, generator=gen, dtype=dtype)
    adj = _adj(crow, col, sources, torch.ones(col.numel(), dtype=dtype))

    def run():
        out = attend(adj, x, q)
        return (out, *torch.autograd.grad(out, (x, q), upstream))

    compiled = run()
    with native.disabled():
        eager = run()
    # PyG's own softmax path over edge_index (its message(), one message per edge).
    row = torch.repeat_interleave(crow.diff())
    pyg_out = DotAttentionConv(width, width)((x, q), torch.stack([col, row]))
    pyg = (pyg_out, *torch.autograd.grad(pyg_out, (x, q), upstream))
    for got, want, ref in zip(compiled, eager, pyg, strict=True):
        torch.testing.assert_close(got, want, **_tol(dtype))
        torch.testing.assert_close(got, ref, **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(_csr(), st.data())
def test_attention_with_targets_as_rows_of_x_equals_their_features(case, data):
    # x_dst as the int64 rows of x (SUPPORTS_TARGET_INDEX): the same output, and x's gradient
    # is the sum of the two that x and x[rows] get, with the loops and without.
    crow, col, sources, width, dtype, seed = case
    targets = crow.numel() - 1
    rows = torch.tensor(data.draw(st.lists(st.integers(0, sources - 1), min_size=targets,
                                           max_size=targets)), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sources, width, generator=gen, dtype=dtype, requires_grad=True)
    upstream = torch.randn(targets, width, generator=gen, dtype=dtype)
    adj = _adj(crow, col, sources, torch.ones(col.numel(), dtype=dtype))
    for off in (False, True):
        with native.disabled() if off else contextlib.nullcontext():
            got = attend(adj, x, rows)
            want = attend(adj, x, x[rows])
            got_grad, = torch.autograd.grad(got, x, upstream)
            want_grad, = torch.autograd.grad(want, x, upstream)
        torch.testing.assert_close(got, want, **_tol(dtype))
        torch.testing.assert_close(got_grad, want_grad, **_tol(dtype))
    # The layer's message() path over edge_index takes the index form too.
    row = torch.repeat_interleave(crow.diff())
    conv = DotAttentionConv(width, width)
    torch.testing.assert_close(conv((x, rows), torch.stack([col, row])), want, **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(_csr(), st.booleans())
def test_weighted_sum_backward_equals_the_eager_scatter(case, weighted):
    crow, col, sources, width, dtype, seed = case
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(crow.numel() - 1, width, generator=gen, dtype=dtype)
    weight = torch.rand(col.numel(), generator=gen, dtype=dtype) if weighted else None
    row = torch.repeat_interleave(crow.diff())
    torch.testing.assert_close(native.scatter(crow, col, weight, grad, sources),
                               _scatter_messages(grad, row, col, weight, sources), **_tol(dtype))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.sampled_from([1, 5, 8, 17, 18, 19, 32, 64, 65]),
       st.sampled_from([torch.float32, torch.float64]), st.data())
def test_index_add_equals_torchs(rows, width, dtype, data):
    index = torch.tensor(data.draw(st.lists(st.integers(0, rows - 1), max_size=30)),
                         dtype=torch.long)  # repeats and rows never indexed included
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    src = torch.randn(index.numel(), width, generator=gen, dtype=dtype)
    base = torch.randn(rows, width, generator=gen, dtype=dtype)
    got = native.index_add(base.clone(), index, src)
    torch.testing.assert_close(got, base.index_add(0, index, src), **_tol(dtype))


def test_index_add_refuses_an_index_outside_the_rows():
    src = torch.ones(2, 3)
    for bad in (3, -1):
        with pytest.raises(IndexError, match=f"index {bad} is outside 0..2"):
            native.index_add(torch.zeros(3, 3), torch.tensor([0, bad]), src)
    with pytest.raises(ValueError, match="do not match"):
        native.index_add(torch.zeros(3, 3), torch.tensor([0]), src)


@settings(max_examples=60, deadline=None)
@given(_csr(), st.data())
def test_in_edges_copies_the_rows_ranges(case, data):
    crow, col, sources, _, dtype, _ = case
    weight = torch.arange(col.numel(), dtype=dtype) / 7
    nodes = crow.numel() - 1
    rows = torch.tensor(data.draw(st.lists(st.integers(0, nodes - 1), unique=True)),
                        dtype=torch.long)
    got_crow, got_col, got_weight = native.in_edges(crow, col, weight, rows)
    edge, count, _ = in_edges(crow, rows)
    assert got_crow.tolist() == [0, *count.cumsum(0).tolist()]
    assert got_col.tolist() == col[edge].tolist()
    assert got_weight.tolist() == weight[edge].tolist()
    assert native.in_edges(crow, col, None, rows)[2] is None


def test_attention_gradcheck():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.double, requires_grad=True)
    q = torch.randn(6, 3, generator=gen, dtype=torch.double, requires_grad=True)
    crow, col = torch.tensor([0, 2, 2, 5, 6, 6, 8]), torch.tensor([1, 3, 0, 2, 5, 4, 0, 1])
    adj = csr_adjacency(crow, col, torch.ones(8, dtype=torch.double), (6, 6))
    assert native.usable(x, q, crow, col)
    assert torch.autograd.gradcheck(lambda a, b: attend(adj, a, b), (x, q))
    assert torch.autograd.gradcheck(lambda a: spmm(adj, a), (x,))


def test_attention_by_hand():
    # Target 0 <- sources {0, 2}, equal scores: alpha = 1/2 each; target 1 has no edges.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out, alpha = native.attend_forward(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1]), x, x)
    assert alpha.tolist() == [0.5, 0.5, 1.0]
    assert out.tolist() == [[1.0, 0.5], [0.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("conv", [MeanConv, GCNNormConv, DotAttentionConv])
@pytest.mark.parametrize("propagation", ["local", "full"])
@pytest.mark.parametrize("width", [6, 18])  # a width the C loops take as it comes, a constant one
def test_res_embedding_equals_its_eager_step(conv, propagation, width):
    gen = torch.Generator().manual_seed(0)
    edges = torch.randint(1, 41, (2, 300), generator=gen)
    from torch_geometric.data import Data

    emb = ResEmbedding(40, width, conv=conv, propagation=propagation, num_layers=1)
    emb.set_graph(Data(edge_index=edges, num_nodes=41))
    ids = torch.randint(0, 41, (32, 7), generator=gen)

    def step():
        emb.zero_grad(set_to_none=True)
        out = emb(ids)
        (out.pow(2).sum() + emb.regularization(ids)).backward()
        return out.detach(), emb.basis.weight.grad.clone(), emb.residual.weight.grad.clone()

    compiled = step()
    with native.disabled():
        eager = step()
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_switches_turn_the_loops_off(monkeypatch):
    x = torch.zeros(2, 2)
    assert native.usable(x, torch.zeros(2, dtype=torch.long))
    with native.disabled():
        assert not native.usable(x)
    assert not native.usable(x.half())
    assert not native.usable(torch.zeros(2, dtype=torch.int32))
    assert not native.usable(x, x.double())
    monkeypatch.setenv("RESEMB_PL_NATIVE", "0")
    assert not native.usable(x)


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt in an empty cache folder; the process's library is restored after."""
    monkeypatch.setenv("RESEMB_PL_NATIVE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_fallback_dir", lambda: tmp_path / "tmp")
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def test_the_library_is_built_once_and_reused(fresh_library, monkeypatch):
    assert native.library() is not None
    (built,) = (fresh_library / "cache").iterdir()
    assert built.name.startswith("csr_kernels-")
    assert built.suffix == ".so"
    assert [p.name for p in (fresh_library / "cache").iterdir()] == [built.name]  # no temporary
    # A second process finds it and compiles nothing.
    native.library.cache_clear()
    monkeypatch.setattr(native, "_build", lambda *args: pytest.fail("built again"))
    lib = native.library()
    assert lib is not None
    assert lib._name == str(built)


def test_without_a_compiler_one_warning_and_the_eager_numbers(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_library / "no-such-cc"))
    with pytest.warns(RuntimeWarning, match="compiled CSR loops unavailable, using eager"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert not native.usable(torch.zeros(1))
    assert not (fresh_library / "cache").exists() or not any((fresh_library / "cache").iterdir())
    # The layers take their eager path and give the same numbers.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    adj = csr_adjacency(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1]), torch.ones(3),
                        (3, 3))
    assert attend(adj, x).tolist() == [[1.0, 0.5], [0.0, 0.0], [0.0, 1.0]]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.data())
def test_same_items_answers_as_the_eager_check(num_nodes, data):
    from resemb_pl.nn.embedding import _same_items

    values = st.integers(0, num_nodes - 1)
    rows = torch.tensor(data.draw(st.lists(values, unique=True)), dtype=torch.long)
    if data.draw(st.booleans()):  # ids made of the rows (and padding): often the same items
        ids = data.draw(st.lists(st.sampled_from([0, *rows.tolist()]), max_size=40))
    else:
        ids = data.draw(st.lists(values, max_size=40))
    ids = torch.tensor(ids, dtype=torch.long).reshape(-1, 1)
    with native.disabled():
        eager = _same_items(ids, rows, num_nodes)
    assert native.same_items(ids, rows, num_nodes) is eager
    assert _same_items(ids, rows, num_nodes) is eager
    # A value outside the table: no answer from the loop (the eager check raises its error).
    assert native.same_items(torch.tensor([num_nodes]), rows, num_nodes) is None
    assert native.same_items(ids, torch.tensor([-1]), num_nodes) is None
