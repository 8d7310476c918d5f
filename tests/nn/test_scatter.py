"""PyG uses torch-scatter for scatter and softmax when it is installed; results must not change."""

import pytest
import torch
import torch_geometric.typing

from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv

pytestmark = pytest.mark.skipif(
    not torch_geometric.typing.WITH_TORCH_SCATTER,
    reason="torch-scatter is not installed (optional accelerator; `pip install torch-scatter` "
    "with the wheel index of this torch version)",
)


@pytest.mark.parametrize("conv", [MeanConv, GCNNormConv, DotAttentionConv])
def test_torch_scatter_path_equals_pure_torch(conv, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(50, 8, requires_grad=True)
    edge_index = torch.randint(0, 50, (2, 300))
    edge_weight = torch.rand(300) + 0.5
    layer = conv(8, 8)

    def run():
        out = layer(x, edge_index, edge_weight=edge_weight)
        (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
        return out, grad

    with_scatter = run()
    monkeypatch.setattr(torch_geometric.typing, "WITH_TORCH_SCATTER", False)
    without = run()
    assert torch.allclose(with_scatter[0], without[0], atol=1e-6)
    assert torch.allclose(with_scatter[1], without[1], atol=1e-5)
