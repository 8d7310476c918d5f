import pytest
import torch

from resemb_pl.nn.layers import (
    FactorizationMachine,
    InnerProduct,
    OuterProduct,
    check_width,
    sum_pool,
)


def test_sum_pool_skips_masked_positions():
    hist = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                         [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    assert torch.equal(sum_pool(hist, mask), torch.tensor([[4.0, 6.0], [16.0, 18.0]]))


def test_factorization_machine_is_the_sum_of_pairwise_inner_products():
    # Fields (1, 2), (3, 4), (0, -1): pairs 1*3+2*4 = 11, 0-2 = -2, 0-4 = -4 -> 5.
    fields = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]]])
    assert torch.allclose(FactorizationMachine()(fields), torch.tensor([5.0]))
    # One field has no pair.
    assert torch.allclose(FactorizationMachine()(fields[:, :1]), torch.tensor([0.0]))


def test_inner_and_outer_products():
    u, v = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[3.0, 4.0], [5.0, -2.0]])
    assert torch.equal(InnerProduct()(u, v), torch.tensor([[11.0], [-2.0]]))
    assert torch.equal(OuterProduct()(u, v),
                       torch.tensor([[3.0, 4.0, 6.0, 8.0], [0.0, 0.0, 5.0, -2.0]]))


def test_check_width_names_the_layer():
    module = torch.nn.Identity()
    check_width(module, 4, 4)
    with pytest.raises(ValueError, match="'Identity' keeps the width: 4 != 5"):
        check_width(module, 4, 5)
    with pytest.raises(ValueError, match="Identity.in_channels"):
        check_width(module, 0, 0)
