"""Optimizers whose cost follows the rows a batch touched, not the size of the table."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim._functional import sparse_adam


def closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """Run an optimizer's ``closure`` with gradients on (steps run under ``no_grad``)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def touched_rows(grad: Tensor, scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The distinct rows of a sparse row gradient and their summed values.

    ``grad`` is a sparse COO tensor with one sparse dimension (what ``nn.Embedding(sparse=True)``
    produces). Duplicate indices are summed, as ``coalesce`` would.

    Without ``scratch`` the rows come back sorted: indices that are already strictly increasing
    (a lookup of distinct sorted ids) are taken as they are, others go through a sort. With
    ``scratch``, an integer tensor of ``grad.size(0)`` entries whose contents do not matter,
    nothing is sorted: every index writes its position into ``scratch`` and the positions that
    stayed pick one entry per row, so the cost is two passes over the indices, and a lookup of
    distinct ids in any order is taken as it is. The rows then come in no particular order.

    Returns:
        ``rows`` (distinct) and ``values`` of shape ``(len(rows), *grad.shape[1:])``.
    """
    index, values = grad._indices()[0], grad._values()
    if grad.is_coalesced() or index.numel() < 2:
        return index, values
    if scratch is None:
        if bool((index[1:] > index[:-1]).all()):
            return index, values
        rows, inverse = torch.unique(index, return_inverse=True)
    else:
        order = torch.arange(index.numel(), dtype=scratch.dtype, device=index.device)
        scratch.scatter_(0, index, order)
        winner = scratch.index_select(0, index)
        kept = winner == order
        if bool(kept.all()):
            return index, values
        rows = index.masked_select(kept)
        inverse = (kept.cumsum(0) - 1).index_select(0, winner)
    summed = values.new_zeros((rows.numel(), *values.shape[1:])).index_add_(0, inverse, values)
    return rows, summed


class RowAdam(torch.optim.SparseAdam):
    r""":class:`torch.optim.SparseAdam`, computed on the touched rows only.

    The update is SparseAdam's ("lazy" Adam: the moments of a row move only when the row has a
    gradient, the bias correction counts the optimizer's steps), and the state has the same
    keys, so checkpoints of either load into the other. SparseAdam masks and adds sparse tensors
    into the full moment tables, which costs several passes of sorting and bookkeeping per
    table; here the touched rows' moments are gathered once, updated as small dense tensors and
    written back, so a step costs the rows of the batch.

    With ``fused=True`` the row update is compiled by :func:`torch.compile` into a few fused
    loops over the touched rows (new moments, their write-back, the weight's step), instead of
    a pass over the rows per tensor operation. On a CPU it takes about half the time (see
    ``scripts/benchmark.py --fused``). The first step compiles, which takes tens of seconds
    once per process (and needs a C++ compiler on a CPU, Triton on a GPU); the results equal
    the unfused ones up to float rounding.

    Args:
        params: Parameters whose gradients are sparse (embedding tables).
        lr: Learning rate.
        betas: Coefficients of the running averages of the gradient and its square.
        eps: Term added to the denominator.
        maximize: Maximise the objective instead.
        fused: Compile the row update into fused loops (see above).

    Example::

        table = torch.nn.Embedding(1000, 18, sparse=True)
        optimizer = RowAdam(table.parameters(), lr=1e-3)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, maximize: bool = False, *, fused: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, maximize=maximize)
        self.fused = fused

    def _scratch(self, p: Tensor) -> Tensor:
        """Scratch space for :func:`touched_rows`, one entry per row, shared by same-size
        tables. It is not optimizer state: every use writes the entries it reads."""
        scratches = self.__dict__.setdefault("_scratches", {})
        key = (p.size(0), p.device)
        if key not in scratches:
            dtype = torch.int32 if p.size(0) < 2**31 else torch.int64
            scratches[key] = torch.zeros(p.size(0), dtype=dtype, device=p.device)
        return scratches[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = float(group["lr"]), group["eps"]
            maximize = group.get("maximize", False)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError(
                        "RowAdam does not support dense gradients, please consider Adam instead"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if grad.sparse_dim() != 1:  # not a row gradient: SparseAdam's own update
                    sparse_adam([p], [grad], [state["exp_avg"]], [state["exp_avg_sq"]],
                                [state["step"]], eps=eps, beta1=beta1, beta2=beta2, lr=lr,
                                maximize=maximize)
                    continue
                rows, g = touched_rows(grad, self._scratch(p))
                if g.numel() == 0:
                    continue
                if maximize:
                    g = -g
                step = state["step"]
                step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
                if self.fused:
                    coef = torch.tensor([1 - beta1, 1 - beta2, step_size, eps], device=p.device)
                    tensors = (p, state["exp_avg"], state["exp_avg_sq"], rows, g)
                    # Row counts change every step and tables differ in size: those stay
                    # symbolic, so one compilation serves them all; the width is a constant.
                    for t in tensors:
                        torch._dynamo.maybe_mark_dynamic(t, 0)
                    _compiled_adam_rows()(*tensors, coef)
                    continue
                m = state["exp_avg"].index_select(0, rows)
                v = state["exp_avg_sq"].index_select(0, rows)
                m.add_(g.sub(m).mul_(1 - beta1))
                v.add_(g.pow(2).sub_(v).mul_(1 - beta2))
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps)).mul_(-step_size))
        return loss


def _adam_rows(param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, rows: Tensor, grad: Tensor,
               coef: Tensor) -> None:
    """RowAdam's update of the distinct ``rows``, written for :func:`torch.compile` to fuse.

    ``coef`` holds ``1 - beta1``, ``1 - beta2``, the bias-corrected step size and ``eps``, as a
    tensor, so that new values (every step changes the step size) reuse the compiled code.
    """
    m = exp_avg[rows]
    v = exp_avg_sq[rows]
    m = m + (grad - m) * coef[0]
    v = v + (grad * grad - v) * coef[1]
    exp_avg[rows] = m
    exp_avg_sq[rows] = v
    param.index_add_(0, rows, (m / (v.sqrt() + coef[3])) * -coef[2])


@functools.cache
def _compiled_adam_rows() -> Callable[..., None]:
    return torch.compile(_adam_rows)
