"""Each paper aggregator equals the dense-matrix form of its equation (eq. 6, 7, 8)."""

import pytest
import torch

from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv


def random_graph(seed: int, n: int = 12, e: int = 40):
    g = torch.Generator().manual_seed(seed)
    key = torch.unique(torch.randint(0, n * n, (e,), generator=g))
    row, col = key // n, key % n  # row = item i, col = neighbour j
    keep = row != col
    i, j = row[keep], col[keep]
    weight = torch.randint(1, 6, (i.numel(),), generator=g).float()
    z = torch.zeros(n, n)
    z[i, j] = weight
    x = torch.randn(n, 8, generator=g)
    return x, torch.stack([j, i]), weight, z


@pytest.mark.parametrize("seed", range(5))
def test_mean_conv_equals_dense_eq6(seed):
    x, edge_index, weight, z = random_graph(seed)
    adj = (z > 0).float()
    dense = adj / adj.sum(1, keepdim=True).clamp(min=1)
    out = MeanConv(8, 8)(x, edge_index, weight)
    assert torch.allclose(out, dense @ x, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_gcn_norm_conv_equals_dense_eq7(seed):
    x, edge_index, weight, z = random_graph(seed)
    d = z.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    dense = inv[:, None] * z * inv[None, :]
    out = GCNNormConv(8, 8)(x, edge_index, weight)
    assert torch.allclose(out, dense @ x, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_dot_attention_conv_equals_dense_eq8(seed):
    x, edge_index, weight, z = random_graph(seed)
    logits = (x @ x.T).masked_fill(z == 0, float("-inf"))
    dense = torch.nan_to_num(torch.softmax(logits, 1))  # rows without neighbours -> 0
    out = DotAttentionConv(8, 8)(x, edge_index, weight)
    assert torch.allclose(out, dense @ x, atol=1e-6)


def test_hand_computed_values():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # Item 1 has neighbours 2 (count 2) and 3 (count 1); item 2 has neighbour 1 (count 2).
    edge_index = torch.tensor([[2, 3, 1], [1, 1, 2]])
    weight = torch.tensor([2.0, 1.0, 2.0])
    mean = MeanConv(2, 2)(x, edge_index)
    assert torch.allclose(mean[1], torch.tensor([1.5, 2.5]))
    assert torch.allclose(mean[3], torch.zeros(2))  # no neighbours: zero central vector
    gcn = GCNNormConv(2, 2)(x, edge_index, weight)
    # d_1 = 3, d_2 = 2, d_3 = 0 -> weight of j=3 in row 1 is 1/sqrt(3*0) := 0.
    assert torch.allclose(gcn[1], 2 / (3**0.5 * 2**0.5) * x[2])
    assert torch.allclose(gcn[2], 2 / (2**0.5 * 3**0.5) * x[1])


@pytest.mark.parametrize("conv", [MeanConv, GCNNormConv, DotAttentionConv])
def test_contract_and_errors(conv):
    layer = conv(8, 8)
    assert str(layer) == f"{conv.__name__}(8, 8)"
    assert not list(layer.parameters())  # the paper's aggregators are parameter-free
    with pytest.raises(ValueError, match="keeps the width: 8 != 16"):
        conv(8, 16)


def test_gcn_prenormalized_needs_weights():
    x, edge_index, weight, _ = random_graph(0)
    layer = GCNNormConv(8, 8, normalize=False)
    with pytest.raises(ValueError, match="needs the normalised edge_weight"):
        layer(x, edge_index)
    ei, w = GCNNormConv(8, 8).normalize_graph(edge_index, weight, x.size(0))
    assert torch.allclose(layer(x, ei, w), GCNNormConv(8, 8)(x, edge_index, weight), atol=1e-6)
