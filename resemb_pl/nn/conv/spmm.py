"""The fused aggregation of the layers that implement ``message_and_aggregate``.

PyG calls a layer's ``message_and_aggregate(adj_t, ...)`` instead of ``message`` and
``aggregate`` when the graph comes as a sparse adjacency (``adj_t[i, j]`` is the weight of the
edge ``j -> i``). :func:`spmm` computes ``adj_t @ x`` for a CSR ``adj_t`` with
:func:`torch.nn.functional.embedding_bag`, which reads each target's CSR range of rows of ``x``
and sums them in one pass, instead of materialising one message per edge and scattering it.
The backward pass adds each target's gradient into the rows of its sources; inside
:func:`compiled_scatter` that addition is compiled by :func:`torch.compile` into one loop.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
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


_COMPILED = contextvars.ContextVar("resemb_pl_spmm_compiled", default=False)


@contextlib.contextmanager
def compiled_scatter(enabled: bool = True) -> Iterator[None]:
    """Within this context, :func:`spmm` products get a compiled backward pass.

    The backward adds every edge's message into its source's row, a scatter of one row per
    edge; eager PyTorch runs it as a generic element-wise scatter, and the compiled loop
    (:func:`torch.compile`, compiled once per process and feature width) takes a fifth of the
    time on a CPU. The choice is made when the product is computed, so the backward pass may
    run outside the context. The first use compiles, which needs a C++ compiler on a CPU and
    Triton on a GPU. ``ResEmbedding.use_sparse_gradients(fused=True)``, which
    ``CTRTask(fused_sparse_step=True)`` calls, makes the embedding propagate within it.
    """
    token = _COMPILED.set(enabled)
    try:
        yield
    finally:
        _COMPILED.reset(token)


def _scatter_messages(grad: Tensor, row: Tensor, col: Tensor, weight: Tensor | None,
                      num_sources: int) -> Tensor:
    """``out[col[e]] += weight[e] * grad[row[e]]`` for every edge ``e``."""
    msg = grad.index_select(0, row)
    if weight is not None:
        msg = msg * weight.unsqueeze(-1)
    return grad.new_zeros(num_sources, grad.size(1)).index_add_(0, col, msg)


@functools.cache
def _compiled_scatter_messages() -> Callable[..., Tensor]:
    return torch.compile(_scatter_messages)


class _CSRSum(torch.autograd.Function):
    """``out[i] = sum_{e in crow[i]:crow[i+1]} weight[e] * x[col[e]]``."""

    @staticmethod
    def forward(ctx, x: Tensor, crow: Tensor, col: Tensor, weight: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, crow, col, weight)
        ctx.compiled = _COMPILED.get()
        return F.embedding_bag(col, x, crow, mode="sum", per_sample_weights=weight,
                               include_last_offset=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, crow, col, weight = ctx.saved_tensors
        row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
        grad = grad.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            if ctx.compiled:
                # col and weight alias the sparse adjacency, which Dynamo cannot trace through:
                # pass copies. Sizes that change every step (edges, nodes) stay symbolic.
                col = col.clone()
                weight = None if weight is None else weight.clone()
                for t in (grad, row, col) if weight is None else (grad, row, col, weight):
                    torch._dynamo.maybe_mark_dynamic(t, 0)
                grad_x = _compiled_scatter_messages()(grad, row, col, weight, x.size(0))
            else:
                grad_x = _scatter_messages(grad, row, col, weight, x.size(0))
        if weight is not None and ctx.needs_input_grad[3]:
            grad_weight = (x.index_select(0, col) * grad.index_select(0, row)).sum(-1)
        return grad_x, None, None, grad_weight
