"""Optimizers whose cost follows the rows a batch touched, not the size of the table."""

from __future__ import annotations

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


def touched_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of a sparse row gradient and their summed values.

    ``grad`` is a sparse COO tensor with one sparse dimension (what ``nn.Embedding(sparse=True)``
    produces). Indices that are already strictly increasing (a lookup of distinct sorted ids)
    are taken as they are; otherwise duplicates are summed, as ``coalesce`` would.

    Returns:
        ``rows`` (sorted, distinct) and ``values`` of shape ``(len(rows), *grad.shape[1:])``.
    """
    index, values = grad._indices()[0], grad._values()
    if grad.is_coalesced() or index.numel() < 2 or bool((index[1:] > index[:-1]).all()):
        return index, values
    rows, inverse = torch.unique(index, return_inverse=True)
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

    Args:
        params: Parameters whose gradients are sparse (embedding tables).
        lr: Learning rate.
        betas: Coefficients of the running averages of the gradient and its square.
        eps: Term added to the denominator.
        maximize: Maximise the objective instead.

    Example::

        table = torch.nn.Embedding(1000, 18, sparse=True)
        optimizer = RowAdam(table.parameters(), lr=1e-3)
    """

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
                rows, g = touched_rows(grad)
                if g.numel() == 0:
                    continue
                if maximize:
                    g = -g
                m = state["exp_avg"].index_select(0, rows)
                v = state["exp_avg_sq"].index_select(0, rows)
                m.add_(g.sub(m).mul_(1 - beta1))
                v.add_(g.pow(2).sub_(v).mul_(1 - beta2))
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step = state["step"]
                step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps)).mul_(-step_size))
        return loss
