"""The fused aggregation of the layers that implement ``message_and_aggregate``.

PyG calls a layer's ``message_and_aggregate(adj_t, ...)`` instead of ``message`` and
``aggregate`` when the graph comes as a sparse adjacency (``adj_t[i, j]`` is the weight of the
edge ``j -> i``). :func:`spmm` computes ``adj_t @ x`` for a CSR ``adj_t`` with
:func:`torch.nn.functional.embedding_bag`, which reads each target's CSR range of rows of ``x``
and sums them in one pass, instead of materialising one message per edge and scattering it.
The backward pass adds each target's gradient into the rows of its sources. When the
adjacency carries its transpose (:func:`with_transpose`, which
:class:`~resemb_pl.nn.ResEmbedding` does for its whole graph) that is one more
``embedding_bag`` over the sources' CSR ranges, about 10x faster on a CPU than the per-edge
``index_add`` it replaces; otherwise the edges are scattered, and inside
:func:`compiled_scatter` that scatter is compiled by :func:`torch.compile` into one loop. On a
CPU, where :mod:`~resemb_pl.nn.conv.native` built its C loops, the scatter is one of them, and
:func:`attend` runs forward and backward as one loop each: :class:`~resemb_pl.nn.ResEmbedding`
then builds no transpose for a batch.

:func:`sddmm` is the other half of an attention layer: one score per edge from the features of
its two ends, with the same two backward paths.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from resemb_pl.nn.conv import native


class Transpose(NamedTuple):
    """The edges of a CSR adjacency ordered by source (its CSC form).

    Attributes:
        ptr: Row pointer over the sources ``(num_sources + 1,)``.
        row: The target of every edge, in source order ``(num_edges,)``.
        perm: The CSR position of every edge, in source order ``(num_edges,)``: an edge
            value ``w`` in CSR order is ``w[perm]`` in source order.
    """

    ptr: Tensor
    row: Tensor
    perm: Tensor


def transpose(crow: Tensor, col: Tensor, num_sources: int) -> Transpose:
    """The :class:`Transpose` of the CSR adjacency ``(crow, col)`` with ``num_sources`` columns.

    Example::

        # edges 1 -> 0 and 0 -> 1, 1 -> 1 (targets by sources)
        t = transpose(torch.tensor([0, 1, 3]), torch.tensor([1, 0, 1]), 2)
        t.ptr, t.row, t.perm  # [0, 1, 3], [1, 0, 1], [1, 0, 2]
    """
    row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
    # Stable, so targets stay ascending per source; 32-bit keys sort in half the time.
    keys = col.int() if num_sources < 2**31 else col
    perm = torch.sort(keys, stable=True)[1]
    ptr = torch.zeros(num_sources + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(torch.bincount(col, minlength=num_sources), 0, out=ptr[1:])
    return Transpose(ptr, row.index_select(0, perm), perm)


def csr_adjacency(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int],
                  t: Transpose | None = None) -> Tensor:
    """A ``torch.sparse_csr_tensor`` (without PyTorch's "beta" warning), with the transpose
    ``t`` attached when given (:func:`with_transpose`)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        adj_t = torch.sparse_csr_tensor(crow, col, values, shape)
    return adj_t if t is None else with_transpose(adj_t, t)


def with_transpose(adj_t: Tensor, t: Transpose) -> Tensor:
    """Attach ``t``, the :func:`transpose` of the CSR ``adj_t``, for :func:`spmm` and
    :func:`sddmm` to run their backward passes over; returns ``adj_t``."""
    adj_t._resemb_transpose = t
    return adj_t


def _csr(adj_t: Tensor) -> tuple[Tensor, Tensor, Transpose | None]:
    t = getattr(adj_t, "_resemb_transpose", None)
    if adj_t.layout != torch.sparse_csr:
        adj_t, t = adj_t.to_sparse_csr(), None
    return adj_t.crow_indices(), adj_t.col_indices(), t


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
    crow, col, t = _csr(adj_t)
    weight = adj_t.values().to(x.dtype) if weighted else None
    out = _CSRSum.apply(x, crow, col, weight, t)
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
    def forward(ctx, x: Tensor, crow: Tensor, col: Tensor, weight: Tensor | None,
                t: Transpose | None) -> Tensor:
        ctx.save_for_backward(x, crow, col, weight)
        ctx.compiled, ctx.t = _COMPILED.get(), t
        return F.embedding_bag(col, x, crow, mode="sum", per_sample_weights=weight,
                               include_last_offset=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, crow, col, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = None
        row = None
        if ctx.needs_input_grad[0]:
            if ctx.t is not None:
                grad_x = _source_sum(ctx.t, grad, weight)
            elif not ctx.compiled and native.usable(grad, crow, col, weight):
                grad_x = native.scatter(crow, col, weight, grad, x.size(0))
            else:
                row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
                grad_x = _scatter(grad, row, col, weight, x.size(0), ctx.compiled)
        if weight is not None and ctx.needs_input_grad[3]:
            if row is None:
                row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
            grad_weight = (x.index_select(0, col) * grad.index_select(0, row)).sum(-1)
        return grad_x, None, None, grad_weight, None


def _source_sum(t: Transpose, grad: Tensor, weight: Tensor | None) -> Tensor:
    """``out[j] = sum over the edges j -> i of weight[e] * grad[i]``, by the transpose."""
    return F.embedding_bag(t.row, grad, t.ptr, mode="sum", include_last_offset=True,
                           per_sample_weights=None if weight is None
                           else weight.index_select(0, t.perm))


def _scatter(grad: Tensor, row: Tensor, col: Tensor, weight: Tensor | None, num_sources: int,
             compiled: bool) -> Tensor:
    """:func:`_scatter_messages`, compiled when ``compiled``."""
    if not compiled:
        return _scatter_messages(grad, row, col, weight, num_sources)
    # col and weight alias the sparse adjacency, which Dynamo cannot trace through: pass
    # copies. Sizes that change every step (edges, nodes) stay symbolic.
    col = col.clone()
    weight = None if weight is None else weight.clone()
    for v in (grad, row, col) if weight is None else (grad, row, col, weight):
        torch._dynamo.maybe_mark_dynamic(v, 0)
    return _compiled_scatter_messages()(grad, row, col, weight, num_sources)


def attend(adj_t: Tensor, x: Tensor, x_dst: Tensor | None = None) -> Tensor:
    r"""Dot-product attention over each target's in-edges, fused.

    .. math::
        \mathbf{c}_i = \sum_{j \to i} \alpha_{ij} \mathbf{x}_j, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \to i}(\mathbf{q}_i^\top \mathbf{x}_j)

    One autograd node for the scores, the softmax over each target's CSR range and the
    weighted sum: the scores and their gradients are sampled products
    (:func:`torch.sparse.sampled_addmm`), and the gradients are summed into the sources with
    ``embedding_bag`` over the sources' CSR ranges (the attached :func:`transpose`; without
    one, a scatter). On a CPU with the compiled loops (:mod:`~resemb_pl.nn.conv.native`),
    forward and backward are one loop each over the targets' edges instead (the same
    numbers; a given transpose is then not needed).

    Args:
        adj_t: Sparse adjacency ``(num_targets, num_sources)``, targets by sources; its values
            are not used.
        x: Source features ``(num_sources, F)``.
        x_dst: Target features (the queries ``q``) ``(num_targets, F)``; or an int64 tensor
            ``(num_targets,)``, the rows of ``x`` that the targets are (``q = x[x_dst]``,
            whose gradient is then added into ``x``'s, one table-sized gradient instead of
            two); default ``x`` (a square adjacency).

    Returns:
        ``(num_targets, F)``; a target without in-edges gets zeros.
    """
    crow, col, t = _csr(adj_t)
    if x_dst is not None and not x_dst.is_floating_point():
        return _Attend.apply(x, None, crow, col, t, x_dst)
    return _Attend.apply(x, x if x_dst is None else x_dst, crow, col, t, None)


def _edge_dots(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a[i] . b[j]`` for every edge ``j -> i`` in CSR order, without gathering the rows
    (:func:`torch.sparse.sampled_addmm`, one pass; 3x the gather-multiply-sum on a CPU)."""
    pattern = csr_adjacency(crow, col, a.new_zeros(col.numel()), (a.size(0), b.size(0)))
    return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


class _Attend(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor | None, crow: Tensor, col: Tensor,
                t: Transpose | None, rows: Tensor | None) -> Tensor:
        from torch_geometric.utils import segment

        if rows is not None:  # the targets are rows of x: q's gradient goes into x's
            q = x.index_select(0, rows)
        ctx.t, ctx.compiled = t, _COMPILED.get()
        ctx.native = not ctx.compiled and native.usable(x, q, crow, col)
        if ctx.native:  # one loop forward, one backward; no transpose needed
            out, alpha = native.attend_forward(crow, col, x, q)
            ctx.save_for_backward(x, q, crow, col, rows, alpha)
            return out
        row = torch.repeat_interleave(crow.diff(), output_size=col.numel())
        score = _edge_dots(crow, col, q, x)
        score = score - segment(score, crow, reduce="max").index_select(0, row)
        alpha = score.exp_()
        alpha = alpha / (segment(alpha, crow, reduce="sum") + 1e-16).index_select(0, row)
        ctx.save_for_backward(x, q, crow, col, rows, alpha, row)
        return F.embedding_bag(col, x, crow, mode="sum", per_sample_weights=alpha,
                               include_last_offset=True)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        if ctx.native:
            x, q, crow, col, rows, alpha = ctx.saved_tensors
            grad_x, grad_q = native.attend_backward(crow, col, x, q, alpha, grad)
        else:
            x, q, crow, col, rows, alpha, row = ctx.saved_tensors
            grad_x, grad_q = _attend_backward(ctx.t, ctx.compiled, x, q, crow, col, row,
                                              alpha, grad)
        if rows is None:
            return grad_x, grad_q, None, None, None, None
        if native.usable(grad_x, rows, grad_q):
            native.index_add(grad_x, rows, grad_q)
        else:
            grad_x.index_add_(0, rows, grad_q)
        return grad_x, None, None, None, None, None


def _attend_backward(t: Transpose | None, compiled: bool, x: Tensor, q: Tensor, crow: Tensor,
                     col: Tensor, row: Tensor, alpha: Tensor,
                     grad: Tensor) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_q)`` of :func:`attend` in eager PyTorch."""
    from torch_geometric.utils import segment

    # d loss / d alpha_e = grad[i] . x[j]; then the softmax's backward within each target.
    d_alpha = _edge_dots(crow, col, grad, x)
    d_alpha.sub_(segment(alpha * d_alpha, crow, reduce="sum").index_select(0, row))
    d_score = d_alpha.mul_(alpha)
    # x_j reaches c_i as a value (weight alpha) and as a key (weight d_score), and q_i as
    # the query (weight d_score, summed over i's in-edges). When q is x, autograd adds
    # the two gradients.
    grad_q = F.embedding_bag(col, x, crow, mode="sum", per_sample_weights=d_score,
                             include_last_offset=True)
    if t is not None:
        # Both sums in one pass over the sources (one output, not two to add): each edge
        # reads row i of grad, weighted by alpha, then row i of q, weighted by d_score.
        both = t.row.unsqueeze(1).repeat(1, 2)
        both[:, 1] += grad.size(0)
        weight = torch.stack([alpha, d_score], 1).index_select(0, t.perm)
        grad_x = F.embedding_bag(both.view(-1), torch.cat([grad, q]), t.ptr * 2, mode="sum",
                                 include_last_offset=True, per_sample_weights=weight.view(-1))
    else:
        grad_x = _scatter(grad, row, col, alpha, x.size(0), compiled)
        grad_x += _scatter(q, row, col, d_score, x.size(0), compiled)
    return grad_x, grad_q
