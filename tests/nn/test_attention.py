"""DIN's local activation unit: the jagged form (valid positions only) equals the dense form."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data

from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import GCNNormConv
from resemb_pl.nn.layers import JAGGED_BELOW, LocalActivationUnit
from resemb_pl.nn.models import DIN


def _mask(lengths, width):
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def _both(unit, hist, target, mask):
    """Output and gradients (input and parameters) of the dense and the jagged form."""
    results = []
    for form in (unit.forward_dense, unit.forward_jagged):
        h, t = hist.clone().requires_grad_(), target.clone().requires_grad_()
        unit.zero_grad()
        out = form(h, t, mask)
        # A weighted sum, so every output entry has its own gradient.
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append([out.detach(), h.grad, t.grad] +
                        [p.grad.clone() for p in unit.parameters()])
    return results


def _assert_equal(dense, jagged):
    for a, b in zip(dense, jagged, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lengths", [[0, 0, 0], [4, 4, 4], [0, 4, 1, 2], [1], [0]])
def test_jagged_equals_dense_forward_and_gradients(lengths):
    torch.manual_seed(0)
    unit = LocalActivationUnit(3, (5, 4)).double()
    hist = torch.randn(len(lengths), 4, 3, dtype=torch.float64)
    target = torch.randn(len(lengths), 3, dtype=torch.float64)
    dense, jagged = _both(unit, hist, target, _mask(lengths, 4))
    _assert_equal(dense, jagged)
    if sum(lengths) == 0:  # no history at all: pooled vector and history gradient are zero
        assert dense[0].abs().max() == 0
        assert jagged[1].abs().max() == 0


def test_padded_positions_never_reach_the_output_or_gradients():
    torch.manual_seed(0)
    unit = LocalActivationUnit(2, (3,))
    hist, target, mask = torch.randn(2, 3, 2), torch.randn(2, 2), _mask([1, 2], 3)
    garbage = hist.clone()
    garbage[~mask] = 1e3
    h = garbage.requires_grad_()
    out = unit.forward_jagged(h, target, mask)
    out.sum().backward()
    assert h.grad[~mask].abs().max() == 0
    assert h.grad[mask].abs().max() > 0
    torch.testing.assert_close(out, unit.forward_jagged(hist, target, mask))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=6), st.integers(1, 5),
       st.lists(st.integers(1, 6), min_size=1, max_size=2), st.integers(0, 2**16))
def test_jagged_equals_dense_on_random_lengths_and_widths(lengths, dim, hidden, seed):
    gen = torch.Generator().manual_seed(seed)
    width = max(1, max(lengths))
    torch.manual_seed(seed)
    unit = LocalActivationUnit(dim, hidden).double()
    hist = torch.randn(len(lengths), width, dim, generator=gen, dtype=torch.float64)
    target = torch.randn(len(lengths), dim, generator=gen, dtype=torch.float64)
    _assert_equal(*_both(unit, hist, target, _mask(lengths, width)))


def test_auto_picks_jagged_when_few_positions_are_valid(monkeypatch):
    unit = LocalActivationUnit(2, (3,))
    calls = []
    monkeypatch.setattr(unit, "forward_jagged", lambda *a: calls.append("jagged"))
    monkeypatch.setattr(unit, "forward_dense", lambda *a: calls.append("dense"))
    hist, target = torch.randn(2, 10, 2), torch.randn(2, 2)
    few = int(JAGGED_BELOW * 10) - 1
    unit(hist, target, _mask([few, few], 10))
    unit(hist, target, _mask([10, 10], 10))
    unit.jagged = False
    unit(hist, target, _mask([1, 0], 10))
    unit.jagged = True
    unit(hist, target, _mask([10, 10], 10))
    assert calls == ["jagged", "dense", "dense", "jagged"]


def test_dice_in_training_keeps_the_dense_statistics():
    """Dice's batch statistics include the padded positions in the dense form, so the unit
    stays dense in training even when asked for the jagged form; in evaluation (running
    statistics) the jagged form is used and agrees."""
    torch.manual_seed(0)
    unit = LocalActivationUnit(2, (3,), act="dice", jagged=True)
    hist, target, mask = torch.randn(3, 4, 2), torch.randn(3, 2), _mask([1, 0, 2], 4)
    dense = unit.forward_dense(hist, target, mask)
    torch.testing.assert_close(unit(hist, target, mask), dense)
    # the jagged form would have other statistics, hence other numbers
    assert not torch.allclose(unit.forward_jagged(hist, target, mask), dense)
    unit.eval()
    torch.testing.assert_close(unit(hist, target, mask), unit.forward_dense(hist, target, mask))


@pytest.mark.parametrize("embedding", ["plain", "res"])
def test_din_jagged_equals_dense(embedding):
    torch.manual_seed(0)
    if embedding == "plain":
        emb = PlainEmbedding(9, 3)
    else:
        emb = ResEmbedding(9, 3, conv=GCNNormConv)
        edge_index = torch.tensor([[1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]])
        emb.set_graph(Data(edge_index=edge_index, num_nodes=10))
        torch.nn.init.normal_(emb.residual.weight, std=0.1)
    model = DIN(emb, num_categories=3, attention_hidden=(5,), hidden=(6,), jagged=False).double()
    hist = torch.tensor([[1, 2, 3, 0, 0], [0, 0, 0, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]])
    target = torch.tensor([2, 3, 4, 5])
    hist_cat, target_cat = hist % 4, target % 4
    grads = []
    for jagged in (False, True):
        model.attention.jagged = jagged
        model.zero_grad()
        out = model(hist, hist_cat, target, target_cat)
        (out * torch.arange(1.0, 5.0, dtype=out.dtype)).sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in model.parameters()
                                       if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 3
    _assert_equal(*grads)


def test_the_jagged_form_exports_with_dynamic_shapes():
    torch.manual_seed(0)
    unit = LocalActivationUnit(2, (3,), jagged=True).eval()
    hist, target, mask = torch.randn(2, 3, 2), torch.randn(2, 2), _mask([1, 3], 3)
    batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=1)
    program = torch.export.export(unit, (hist, target, mask), dynamic_shapes={
        "hist": {0: batch, 1: length}, "target": {0: batch}, "mask": {0: batch, 1: length}})
    assert any("nonzero" in str(node.target) for node in program.graph.nodes)
    hist, target, mask = torch.randn(4, 5, 2), torch.randn(4, 2), _mask([0, 5, 2, 1], 5)
    torch.testing.assert_close(program.module()(hist, target, mask),
                               unit.forward_dense(hist, target, mask))
