"""The fused aggregation of the layers that implement ``message_and_aggregate``.

PyG calls a layer's ``message_and_aggregate(adj_t, ...)`` instead of ``message`` and
``aggregate`` when the graph comes as a sparse adjacency (``adj_t[i, j]`` is the weight of the
edge ``j -> i``). :func:`spmm` computes ``adj_t @ x`` for a CSR ``adj_t`` with
:func:`torch.nn.functional.embedding_bag`, which reads each target's CSR range of rows of ``x``
and sums them in one pass, instead of materialising one message per edge and scattering it.
The backward pass adds each target's gradient into the rows of its sources.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def spmm(adj_t: Tensor, x: Tensor, reduce: Literal["sum", "mean"] = "sum",
         weighted: bool = True) -> Tensor:
    """``adj_t @ x`` for a sparse ``adj_t`` of shape ``(num_targets, len(x))``.

    Args:
        adj_t: Sparse adjacency, targets by sources (CSR is used as it is; other layouts are
            converted).
        x: Source features ``(num_sources, F)``.
        reduce: ``"sum"``, or ``"mean"``: the sum divided by the number of in-edges (zero for a
            target without edges, as PyG's mean aggregation).
        weighted: Multiply each row by its edge's value; ``False`` counts every edge once.

    Returns:
        ``(num_targets, F)``.
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"spmm: reduce must be 'sum' or 'mean', got {reduce!r}")
    if adj_t.layout != torch.sparse_csr:
        adj_t = adj_t.to_sparse_csr()
    crow, col = adj_t.crow_indices(), adj_t.col_indices()
    weight = adj_t.values().to(x.dtype) if weighted else None
    out = _CSRSum.apply(x, crow, col, weight)
    if reduce == "mean":
        out = out / crow.diff().clamp_(min=1).unsqueeze(-1).to(out.dtype)
    return out


class _CSRSum(torch.autograd.Function):
    """``out[i] = sum_{e in crow[i]:crow[i+1]} weight[e] * x[col[e]]``."""

    @staticmethod
    def forward(ctx, x: Tensor, crow: Tensor, col: Tensor, weight: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, crow, col, weight)
        return F.embedding_bag(col, x, crow, mode="sum", per_sample_weights=weight,
                               include_last_offset=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, crow, col, weight = ctx.saved_tensors
        row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
        grad_edge = grad.index_select(0, row)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            msg = grad_edge if weight is None else grad_edge * weight.unsqueeze(-1)
            grad_x = torch.zeros_like(x).index_add_(0, col, msg)
        if weight is not None and ctx.needs_input_grad[3]:
            grad_weight = (x.index_select(0, col) * grad_edge).sum(-1)
        return grad_x, None, None, grad_weight
