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


def test_touched_rows_with_scratch_sums_duplicates_without_sorting():
    scratch = torch.full((10,), 7, dtype=torch.int32)  # stale contents must not matter
    rows, values = touched_rows(_grad([4, 1, 4, 7, 1], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0],
                                                        [7.0, 8.0], [0.5, 0.5]]), scratch)
    assert sorted(rows.tolist()) == [1, 4, 7]
    summed = dict(zip(rows.tolist(), values.tolist(), strict=True))
    assert summed == {1: [3.5, 4.5], 4: [6.0, 8.0], 7: [7.0, 8.0]}
    # Distinct rows in any order are taken as they are: no copy, no reordering.
    grad = _grad([9, 2, 5], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    rows, values = touched_rows(grad, scratch)
    assert rows.tolist() == [9, 2, 5]
    assert values.data_ptr() == grad._values().data_ptr()


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


def test_fused_row_adam_equals_unfused():
    # fused=True compiles the row update (torch.compile); the numbers must not change.
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(30, 4, generator=gen)
    fused, plain = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opts = [RowAdam([fused], lr=0.05, fused=True), RowAdam([plain], lr=0.05)]
    for n in (12, 7, 12):  # row counts change from step to step
        index = torch.randint(0, 30, (n,), generator=gen)
        grad = torch.sparse_coo_tensor(index[None], torch.randn(n, 4, generator=gen), (30, 4))
        fused.grad, plain.grad = grad.clone(), grad.clone()
        for opt in opts:
            opt.step()
        assert torch.allclose(fused, plain, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(opts[0].state[fused][key], opts[1].state[plain][key], atol=1e-6)
