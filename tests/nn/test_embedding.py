import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data

from resemb_pl.data.graph import build_interest_graph
from resemb_pl.errors import CheckpointError
from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.embedding import lookup

CONVS = [MeanConv, GCNNormConv, DotAttentionConv]


def graph():
    return build_interest_graph([1, 2, 3, 4, 2, 5, 1, 3], [4, 4], num_items=6, window=2, top_k=3)


@pytest.mark.parametrize("conv", CONVS)
def test_res_embedding_is_central_plus_residual(conv):
    emb = ResEmbedding(6, 4, conv=conv, propagation="full")
    g = graph()
    emb.set_graph(g)
    with torch.no_grad():
        emb.residual.weight[1:].normal_()
    ids = torch.tensor([[1, 2, 0], [6, 3, 3]])
    central = conv(4, 4)(emb.basis.weight, g.edge_index, g.edge_weight)
    want = central[ids] + emb.residual.weight[ids]
    assert torch.allclose(emb(ids), want, atol=1e-6)
    assert emb(ids).shape == (2, 3, 4)
    assert torch.equal(emb(torch.tensor([0])), torch.zeros(1, 4))  # padding embeds to zero
    assert torch.equal(emb.central_table()[6], torch.zeros(4))  # item 6 has no neighbours


def test_self_loops_give_isolated_items_their_own_basis():
    emb = ResEmbedding(6, 4, conv=MeanConv, self_loops=True)
    emb.set_graph(graph())
    assert torch.allclose(emb(torch.tensor([6])), emb.basis.weight[6:7])


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_local_propagation_equals_full(conv, num_layers):
    torch.manual_seed(0)
    full = ResEmbedding(6, 4, conv=conv, num_layers=num_layers, propagation="full")
    local = ResEmbedding(6, 4, conv=conv, num_layers=num_layers, propagation="local")
    local.load_state_dict(full.state_dict())
    for e in (full, local):
        e.set_graph(graph())
    ids = torch.tensor([[2, 5, 5], [1, 0, 4]])
    assert torch.allclose(full(ids), local(ids), atol=1e-6)


@pytest.mark.parametrize("into_padding", [False, True])
def test_attention_queries_as_rows_give_the_lookups_numbers(into_padding):
    # DotAttentionConv takes the batch's rows as its targets (SUPPORTS_TARGET_INDEX): one
    # table-sized gradient for the basis. Forward and both tables' gradients equal those of
    # the looked-up queries; a graph with in-edges into the padding row keeps the lookup
    # (whose padding row gets no gradient).
    g = graph()
    if into_padding:
        g = Data(edge_index=torch.cat([g.edge_index, torch.tensor([[3], [0]])], 1),
                 edge_weight=torch.cat([g.edge_weight, torch.ones(1)]), num_nodes=7)
    torch.manual_seed(0)
    embs = [ResEmbedding(6, 18, conv=DotAttentionConv, propagation="local") for _ in range(2)]
    embs[1].load_state_dict(embs[0].state_dict())
    with torch.no_grad():
        for e in embs:
            e.set_graph(g)
            e.residual.weight[1:] = torch.linspace(-1, 1, 6 * 18).view(6, 18)
    embs[1]._target_index = False  # the lookup of the queries
    assert embs[0]._target_index is True
    assert embs[0]._padding_in_edges is into_padding
    ids = torch.tensor([[2, 5, 5], [1, 0, 4], [3, 3, 0]])
    results = []
    for e in embs:
        out = e(ids)
        (out.pow(2).sum() + e.regularization(ids)).backward()
        results.append((out.detach(), e.basis.weight.grad, e.residual.weight.grad))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_regularization():
    emb = ResEmbedding(6, 2, residual_l2=0.5)
    with torch.no_grad():
        emb.residual.weight[1:] = torch.arange(12.0).view(6, 2)
    # batch rows 1 and 2 (duplicates and padding ignored): (0+1 + 4+9) / 2 = 7
    assert emb.regularization(torch.tensor([[1, 2, 2, 0]])).item() == pytest.approx(0.5 * 7)
    table = ResEmbedding(6, 2, residual_l2=0.5, l2_mode="table")
    table.load_state_dict(emb.state_dict())
    want = sum(a * a + b * b for a, b in torch.arange(12.0).view(6, 2).tolist()) / 6
    assert table.regularization(torch.tensor([1])).item() == pytest.approx(0.5 * want)
    assert PlainEmbedding(6, 2).regularization(torch.tensor([1])).item() == 0.0


@pytest.mark.parametrize("sparse", [False, True])
def test_regularization_takes_only_the_ids_whatever_their_order(sparse):
    # The penalty of the batch's distinct rows is the same, with the same gradients, in any
    # order of the ids, before or after a forward (which lends it its residual rows).
    torch.manual_seed(0)
    ref = ResEmbedding(6, 3, residual_l2=0.5, propagation="local")
    emb = ResEmbedding(6, 3, residual_l2=0.5, propagation="local")
    emb.load_state_dict(ref.state_dict())
    for e in (ref, emb):
        e.set_graph(graph())
        with torch.no_grad():
            e.residual.weight[1:] = torch.arange(18.0).view(6, 3) / 10
        if sparse:
            e.use_sparse_gradients()
    ids = torch.tensor([[2, 5, 5], [1, 0, 4]])
    rows = torch.tensor([1, 2, 4, 5])
    want = 0.5 * (torch.arange(18.0).view(6, 3)[rows - 1] / 10).pow(2).sum(-1).mean()
    assert ref.regularization(ids).item() == pytest.approx(want.item())  # before any forward
    loss_ref = ref(ids).sum() + ref.regularization(ids)
    loss = emb(ids).sum() + emb.regularization(ids.flip(1).reshape(-1))  # another order, flat
    assert loss.item() == pytest.approx(loss_ref.item())
    loss_ref.backward()
    loss.backward()
    for name in ("basis", "residual"):
        g, g_ref = getattr(emb, name).weight.grad, getattr(ref, name).weight.grad
        if sparse:
            g, g_ref = g.to_dense(), g_ref.to_dense()
        assert torch.allclose(g, g_ref, atol=1e-6), name
    # The ids of another batch than the forward's: their own rows.
    emb(ids)
    assert emb.regularization(torch.tensor([3])).item() == pytest.approx(
        0.5 * (torch.arange(6.0, 9.0) / 10).pow(2).sum().item())


@pytest.mark.parametrize("sparse", [False, True])
def test_lookup_of_distinct_rows_equals_the_table(sparse):
    torch.manual_seed(0)
    ref = torch.nn.Embedding(7, 3, padding_idx=0, sparse=sparse)
    table = torch.nn.Embedding(7, 3, padding_idx=0, sparse=sparse)
    table.load_state_dict(ref.state_dict())
    rows = torch.tensor([5, 0, 2, 6])  # distinct, padding among them
    weight = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert torch.equal(lookup(table, rows), ref(rows))
    (lookup(table, rows) * weight).sum().backward()
    (ref(rows) * weight).sum().backward()
    got, want = table.weight.grad, ref.weight.grad
    if sparse:
        got, want = got.to_dense(), want.to_dense()
    assert torch.equal(got, want)
    assert torch.equal(got[0], torch.zeros(3))  # padding gets no gradient
    assert torch.equal(got[2], torch.full((3,), 3.0))
    assert torch.equal(got[1], torch.zeros(3))  # not looked up


def _penalised(emb: ResEmbedding, forward_ids, reg_ids, backward_between: bool):
    """Loss and gradients of a forward on ``forward_ids`` and the penalty of ``reg_ids``."""
    emb.zero_grad(set_to_none=True)
    out = emb(forward_ids).sum()
    if backward_between:  # the forward's graph is gone before the regulariser runs
        out.backward()
        out = out.detach()
    loss = out + emb.regularization(reg_ids)
    if loss.requires_grad:
        loss.backward()
    return loss.item(), [p.grad.clone() if p.grad is not None else None
                         for p in (emb.basis.weight, emb.residual.weight)]


@settings(max_examples=60, deadline=None)
@given(forward_ids=st.lists(st.integers(0, 8), min_size=1, max_size=12),
       other=st.lists(st.integers(0, 8), max_size=12),
       same_items=st.booleans(), backward_between=st.booleans(),
       conv=st.sampled_from(CONVS))
def test_regularization_after_a_forward_equals_a_fresh_one(forward_ids, other, same_items,
                                                           backward_between, conv):
    # Whatever ids the regulariser gets (the forward's items in another order and padding, or
    # others), and whether or not a backward pass freed the forward's graph in between, the
    # penalty and the gradients are those of a module that computes the penalty afresh.
    torch.manual_seed(0)
    g = build_interest_graph([1, 2, 3, 4, 2, 5, 1, 3, 7, 8, 7, 8], [4, 4, 4], num_items=8,
                             window=2, top_k=3)
    emb, ref = ResEmbedding(8, 3, conv=conv, residual_l2=0.5), ResEmbedding(8, 3, conv=conv,
                                                                               residual_l2=0.5)
    with torch.no_grad():
        emb.residual.weight.normal_()  # row 0 too: padding is left out of the penalty anyway
    ref.load_state_dict(emb.state_dict())
    for e in (emb, ref):
        e.set_graph(g)
    forward_ids = torch.tensor(forward_ids)
    reg_ids = (torch.cat([forward_ids.flip(0), torch.zeros(3, dtype=torch.long)])
               if same_items else torch.tensor(other, dtype=torch.long))
    got = _penalised(emb, forward_ids, reg_ids, backward_between)
    ref._looked_up = None  # nothing lent by the forward: the penalty from the ids alone
    ref_forward = ref.forward
    ref.forward = lambda ids: (ref_forward(ids), setattr(ref, "_looked_up", None))[0]
    want = _penalised(ref, forward_ids, reg_ids, backward_between)
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    for g_got, g_want in zip(got[1], want[1], strict=True):
        assert (g_got is None) == (g_want is None)
        if g_got is not None:
            assert torch.allclose(g_got, g_want, atol=1e-6)


def test_graph_survives_a_state_dict_round_trip():
    emb = ResEmbedding(6, 4, conv=GCNNormConv)
    emb.set_graph(graph())
    fresh = ResEmbedding(6, 4, conv=GCNNormConv)
    fresh.load_state_dict(emb.state_dict())
    ids = torch.tensor([1, 2, 3, 6])
    assert torch.equal(fresh(ids), emb(ids))
    assert fresh.edge_index.shape == emb.edge_index.shape


def test_graph_size_must_match():
    emb = ResEmbedding(5, 4)
    with pytest.raises(ValueError, match="graph has 7 nodes but the embedding has 6 rows"):
        emb.set_graph(graph())


@pytest.mark.parametrize(
    ("edges", "why"),
    [
        ([[1, 7], [2, 2]], "graph: edge_index holds node 7, outside 0..6"),
        ([[1, 2], [-1, 2]], "graph: edge_index holds node -1, outside 0..6"),
        ([[1.0, 2.0], [2.0, 3.0]], r"must be a \(2, num_edges\) integer tensor, got torch.float32"),
        ([1, 2], r"a \(2, num_edges\) integer tensor, got torch.int64 of shape \(2,\)"),
    ],
)
def test_a_graph_with_edges_outside_the_items_is_refused(edges, why):
    # The layers index rows with the edges (the compiled CSR loops without bounds checks).
    emb = ResEmbedding(6, 4, conv=DotAttentionConv)
    with pytest.raises(ValueError, match=why):
        emb.set_graph(Data(edge_index=torch.tensor(edges), num_nodes=7))


@st.composite
def _broken_graph(draw, state):
    """The graph buffers of ``state`` broken one way a file can be: an edge's node outside the
    items, an edge moved to another target (the row pointer no longer counts it), a row pointer
    entry moved, or a buffer one entry shorter or longer."""
    state = {k: v.clone() for k, v in state.items()}
    size = state["rowptr"].numel() - 1
    edges = state["edge_index"].size(1)
    how = draw(st.sampled_from(["node", "target", "rowptr", "shorter", "longer"]))
    k = draw(st.integers(0, edges - 1))
    if how == "node":
        far = draw(st.integers(0, 10**9))
        node = draw(st.sampled_from([size + far, -1 - far]))
        state["edge_index"][draw(st.integers(0, 1)), k] = node
    elif how == "target":
        old = int(state["edge_index"][1, k])
        state["edge_index"][1, k] = draw(st.integers(0, size - 1).filter(lambda t: t != old))
    elif how == "rowptr":
        state["rowptr"][draw(st.integers(0, size))] += draw(st.sampled_from([-2, -1, 1, 3]))
    else:
        name = draw(st.sampled_from(["edge_index", "edge_weight", "rowptr"]))
        buffer = state[name]
        state[name] = (buffer[..., :-1] if how == "shorter"
                       else torch.cat([buffer, buffer[..., -1:]], -1))
    return state


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from(CONVS))
def test_a_checkpoint_with_a_broken_graph_is_refused_by_name(data, conv):
    emb = ResEmbedding(6, 4, conv=conv)
    emb.set_graph(graph())
    broken = data.draw(_broken_graph(emb.state_dict()))
    fresh = ResEmbedding(6, 4, conv=conv)
    with pytest.raises(CheckpointError, match="checkpoint edge_index"):
        fresh.load_state_dict(broken)
    fresh.load_state_dict(emb.state_dict())  # the intact one loads and runs
    ids = torch.tensor([1, 2, 6])
    assert torch.equal(fresh(ids), emb(ids))


def test_plain_embedding():
    emb = PlainEmbedding(6, 3)
    ids = torch.tensor([[1, 0]])
    assert torch.equal(emb(ids)[0, 0], emb.table.weight[1])
    assert torch.equal(emb(ids)[0, 1], torch.zeros(3))
    assert emb.item_table().shape == (7, 3)


@pytest.mark.parametrize("conv", CONVS)
def test_a_new_graph_drops_the_cached_transpose(conv):
    # The whole graph's transpose (the backward passes' CSC) is cached; setting, loading or
    # editing the graph must not leave gradients computed over the old one.
    def table_grad(emb):
        emb.zero_grad()
        (emb.central_table() * torch.arange(28.0).view(7, 4)).sum().backward()
        return emb.basis.weight.grad.clone()

    first = build_interest_graph([1, 2, 3, 4, 5, 6], [6], num_items=6, window=1, top_k=3)
    second = build_interest_graph([6, 4, 2, 5, 3, 1], [6], num_items=6, window=1, top_k=3)
    assert first.edge_index.shape == second.edge_index.shape  # same size, other edges
    emb = ResEmbedding(6, 4, conv=conv, propagation="full")
    fresh = ResEmbedding(6, 4, conv=conv, propagation="full")
    fresh.load_state_dict(emb.state_dict(), strict=False)
    emb.set_graph(first)
    table_grad(emb)  # caches the first graph's transpose
    emb.set_graph(second)
    fresh.set_graph(second)
    assert torch.equal(table_grad(emb), table_grad(fresh))
    emb.set_graph(first)
    table_grad(emb)
    emb.load_state_dict(fresh.state_dict())  # back to the second graph, by loading
    assert torch.equal(table_grad(emb), table_grad(fresh))
    emb.set_graph(first)
    table_grad(emb)
    with torch.no_grad():  # the second graph's buffers written into the first's in place
        for name in ("edge_index", "edge_weight", "rowptr"):
            getattr(emb, name).copy_(getattr(fresh, name))
    assert torch.equal(table_grad(emb), table_grad(fresh))
