import pytest
import torch

from resemb_pl.optim import RowAdam, touched_rows


def _grad(index, values, rows=10):
    return torch.sparse_coo_tensor(torch.tensor([index]), torch.tensor(values), (rows, 2))


def test_touched_rows_sums_duplicates_and_keeps_sorted_distinct_rows():
    rows, values = touched_rows(_grad([4, 1, 4, 7], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0],
                                                     [7.0, 8.0]]))
    assert rows.tolist() == [1, 4, 7]
    assert values.tolist() == [[3.0, 4.0], [6.0, 8.0], [7.0, 8.0]]
    rows, values = touched_rows(_grad([2, 5], [[1.0, 1.0], [2.0, 2.0]]))
    assert rows.tolist() == [2, 5] and values.tolist() == [[1.0, 1.0], [2.0, 2.0]]


@pytest.mark.parametrize("maximize", [False, True])
def test_row_adam_equals_sparse_adam(maximize):
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(40, 3, generator=gen)
    ours = torch.nn.Parameter(start.clone())
    ref = torch.nn.Parameter(start.clone())
    opt = RowAdam([ours], lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=maximize)
    ref_opt = torch.optim.SparseAdam([ref], lr=0.05, betas=(0.8, 0.95), eps=1e-6,
                                     maximize=maximize)
    for step in range(6):
        n = 25
        index = torch.randint(0, 40, (n,), generator=gen)  # with repeats, unsorted
        if step == 3:
            index = torch.arange(0, 40, 3)  # distinct and sorted: taken as they are
            n = index.numel()
        grad = torch.sparse_coo_tensor(index[None], torch.randn(n, 3, generator=gen), (40, 3))
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
        assert torch.allclose(ours, ref, atol=1e-6)
    # The state has SparseAdam's keys and values, so checkpoints move between the two.
    assert opt.state[ours]["step"] == ref_opt.state[ref]["step"] == 6
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(opt.state[ours][key], ref_opt.state[ref][key], atol=1e-6)
    ref_opt.load_state_dict(opt.state_dict())


def test_row_adam_untouched_rows_and_errors():
    p = torch.nn.Parameter(torch.ones(5, 2))
    opt = RowAdam([p], lr=0.1)
    p.grad = _grad([3], [[1.0, -1.0]], rows=5)
    opt.step()
    assert torch.equal(p[[0, 1, 2, 4]], torch.ones(4, 2))
    assert torch.allclose(p[3], torch.tensor([0.9, 1.1]))
    p.grad = torch.ones(5, 2)
    with pytest.raises(RuntimeError, match="does not support dense gradients"):
        opt.step()
