"""Item embeddings: the plain lookup and the res-embedding ``E = W·Cb + R`` (paper eq. 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from resemb_pl.errors import CheckpointError, ConfigError, require
from resemb_pl.nn.conv import MeanConv, capabilities, native
from resemb_pl.nn.conv.spmm import Transpose, compiled_scatter, csr_adjacency, transpose
from resemb_pl.nn.subgraph import distinct, in_edges, in_subgraph

ConvFactory = Callable[[int, int], MessagePassing]
L2Mode = Literal["batch", "table"]
PlainL2Mode = Literal["batch", "table", "mba"]


class ItemEmbedding(nn.Module):
    """Base of the item embeddings: ``forward(ids) -> Tensor[..., embedding_dim]``.

    Row 0 is padding and embeds to zero. Subclasses add :meth:`regularization`.
    """

    num_items: int
    embedding_dim: int

    def regularization(self, ids: Tensor) -> Tensor:
        """The penalty added to the loss for a batch whose item ids are ``ids``."""
        return ids.new_zeros((), dtype=torch.float32)

    def item_table(self) -> Tensor:
        """The embedding of every item, ``(num_items + 1, embedding_dim)``."""
        return self(torch.arange(self.num_items + 1, device=self._device()))

    def use_sparse_gradients(self, fused: bool = False) -> list[nn.Parameter]:
        """Make the item tables' gradients sparse; return their weights for a sparse optimizer.

        A step then costs what the batch touches, not the catalogue. Only lookups give sparse
        gradients, so ``l2_mode="table"`` (it reads every row) is refused. ``fused`` compiles
        the row loops of the embedding's backward pass, where it has any (see
        :meth:`ResEmbedding.use_sparse_gradients`).
        """
        if getattr(self, "l2_mode", None) == "table":
            raise ConfigError("sparse embeddings: l2_mode='table' reads every row; use 'batch'")
        tables = [m for m in self.modules() if isinstance(m, nn.Embedding)]
        for table in tables:
            table.sparse = True
        return [table.weight for table in tables]

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class _Rows(torch.autograd.Function):
    """``weight.index_select(0, rows)``, whose backward adds each row's gradient into zeros in
    one pass: the compiled loop on a CPU (:func:`~resemb_pl.nn.conv.native.index_add`), else
    ``index_copy_`` for ``distinct`` rows and ``index_add_`` for rows that repeat."""

    @staticmethod
    def forward(ctx, weight: Tensor, rows: Tensor, padding_idx: int | None,
                distinct: bool) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.size, ctx.padding_idx, ctx.distinct = weight.size(0), padding_idx, distinct
        return weight.index_select(0, rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (rows,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.size, grad.size(1))
        if native.usable(out, rows, grad):
            native.index_add(out, rows, grad)
        elif ctx.distinct:
            out.index_copy_(0, rows, grad)
        else:
            out.index_add_(0, rows, grad)
        if ctx.padding_idx is not None:
            out[ctx.padding_idx] = 0
        return out, None, None, None


def lookup(table: nn.Embedding, rows: Tensor) -> Tensor:
    """``table(rows)`` for distinct ``rows`` (as :func:`~resemb_pl.nn.subgraph.distinct`
    gives them), the same numbers forward and backward.

    A table with dense gradients gets its gradient by one copy of the rows' gradients into
    zeros instead of ``nn.Embedding``'s accumulating loop (on a CPU, 0.13 ms instead of 1.05 ms
    for 6k of 18k rows); a sparse table is looked up as it is, for its sparse gradient. Rows
    that repeat would lose all but one of their gradients: pass distinct rows only.
    """
    if table.sparse or table.max_norm is not None:
        return table(rows)
    return _Rows.apply(table.weight, rows, table.padding_idx, True)


def _batch_rows(ids: Tensor, num_rows: int) -> Tensor:
    """The distinct item ids of a batch (ids below ``num_rows``), padding excluded, unsorted."""
    rows = distinct(ids, num_rows)[0]  # a scratch map, no sort
    return rows[rows > 0]


def _same_items(ids: Tensor, rows: Tensor, num_rows: int) -> bool:
    """Whether the items of ``ids`` are the distinct ``rows``, padding (0) aside: each id is one
    of the rows or 0, and each row other than 0 is among the ids. Two marks over the table, no
    sort."""
    if native.usable(ids, rows):  # one pass over ids, no marks tensors
        same = native.same_items(ids, rows, num_rows)
        if same is not None:
            return same
    ids = ids.reshape(-1)

    def marks(values: Tensor) -> Tensor:  # True at padding and at every value
        mark = torch.zeros(num_rows, dtype=torch.bool, device=ids.device)
        mark[0] = True
        return mark.index_fill_(0, values, True)

    return (bool(marks(rows).index_select(0, ids).all())
            and bool(marks(ids).index_select(0, rows).all()))


def _l2(table: nn.Embedding, ids: Tensor, mode: L2Mode) -> Tensor:
    """Mean squared row norm over the distinct rows of the batch (``batch``) or the table."""
    if mode == "table":
        return table.weight[1:].pow(2).sum(-1).mean()
    rows = _batch_rows(ids, table.num_embeddings)
    return lookup(table, rows).pow(2).sum(-1).mean() if rows.numel() else table.weight.new_zeros(())


def _check_edges(edge_index: Tensor, num_nodes: int, what: str,
                 error: type[Exception] = ValueError) -> None:
    """Refuse edges that are not ``(2, E)`` integers below ``num_nodes`` (and not negative)."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2 or edge_index.is_floating_point():
        raise error(f"{what}: edge_index must be a (2, num_edges) integer tensor, got "
                    f"{edge_index.dtype} of shape {tuple(edge_index.shape)}")
    bad = edge_index[(edge_index < 0) | (edge_index >= num_nodes)]
    if bad.numel():
        raise error(f"{what}: edge_index holds node {int(bad[0])}, outside 0..{num_nodes - 1}")


def _row_pointer(targets: Tensor, num_nodes: int) -> Tensor:
    """The CSR row pointer ``(num_nodes + 1,)`` of edges sorted by their ``targets``."""
    counts = torch.bincount(targets, minlength=num_nodes)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _check_sizes(num_items: int, embedding_dim: int, **non_negative: float) -> None:
    """Refuse an embedding of no items or no width, or a negative coefficient, naming the key."""
    require("model.num_items", num_items, 1)
    require("model.embedding_dim", embedding_dim, 1)
    for key, value in non_negative.items():
        require(f"model.embedding.{key}", value, 0)


def load_pretrained(path: str | Path, num_items: int, embedding_dim: int) -> Tensor:
    """Read a ``(num_items + 1, embedding_dim)`` table written by ``python -m resemb_pl.pretrain``.

    Raises:
        CheckpointError: The file is missing, not a plain ``.npy`` array, or of another shape.
    """
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read a pretrained embedding: {err}") from None
    if table.shape != (num_items + 1, embedding_dim):
        raise CheckpointError(
            f"{path}: pretrained embedding has shape {tuple(table.shape)}, the model needs "
            f"({num_items + 1}, {embedding_dim}) (num_items + 1, embedding_dim)"
        )
    return torch.from_numpy(np.asarray(table, dtype=np.float32))


class PlainEmbedding(ItemEmbedding):
    r"""The ordinary per-item lookup that res-embedding replaces.

    With ``l2_mode="mba"`` the penalty is DIN's mini-batch aware regulariser (DIN §5.1, eq. 6–7):
    every distinct item ``j`` of the mini-batch adds :math:`\|\mathbf{w}_j\|^2 / n_j`, where
    :math:`n_j` is the number of times ``j`` occurs in the training samples, so one epoch adds up
    to about the full-table L2. The counts come from :meth:`set_item_counts` (the task calls it
    with the training samples); until then every :math:`n_j` is 1.

    Args:
        num_items: Number of items ``H`` (the table has ``H + 1`` rows, row 0 is padding).
        embedding_dim: Size of each embedding.
        l2: Coefficient of the L2 penalty (0 disables it).
        l2_mode: ``"batch"`` penalises the mean squared norm of the rows in the mini-batch,
            ``"table"`` that of the whole table, ``"mba"`` the rows of the mini-batch weighted
            by ``1 / n_j`` (DIN §5.1).
        init_std: Standard deviation of the normal initialisation.
        pretrained: A ``.npy`` table of shape ``(num_items + 1, embedding_dim)`` that initialises
            the lookup (written by ``python -m resemb_pl.pretrain``); row 0 is set to zero.

    Example::

        emb = PlainEmbedding(100, 18)
        emb(torch.tensor([[1, 2, 0]])).shape  # (1, 3, 18)
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int,
        *,
        l2: float = 0.0,
        l2_mode: PlainL2Mode = "batch",
        init_std: float = 0.05,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(num_items, embedding_dim, l2=l2, init_std=init_std)
        if l2_mode not in ("batch", "table", "mba"):
            raise ConfigError(f"l2_mode: choose batch, table or mba, got {l2_mode!r}")
        self.num_items, self.embedding_dim = num_items, embedding_dim
        self.l2, self.l2_mode = l2, l2_mode
        self.table = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            if pretrained is not None:
                self.table.weight.copy_(load_pretrained(pretrained, num_items, embedding_dim))
            self.table.weight[0].zero_()
        if l2_mode == "mba":
            self.register_buffer("item_count", torch.ones(num_items + 1))

    def forward(self, ids: Tensor) -> Tensor:
        return self.table(ids)

    def set_item_counts(self, samples) -> None:
        """Set :math:`n_j` for ``l2_mode="mba"``: occurrences of item ``j`` in ``samples``.

        ``samples`` are the data layer's :class:`~resemb_pl.data.protocols.Samples`: items
        count in histories (:meth:`~resemb_pl.data.protocols.Samples.history_cover`) and as
        targets.
        """
        if self.l2_mode != "mba":
            return
        size = self.num_items + 1
        counts = np.bincount(samples.seq, weights=samples.history_cover(), minlength=size)
        counts += np.bincount(samples.target, minlength=size)
        self.item_count = torch.from_numpy(counts[:size]).clamp_min(1).to(self.item_count)

    def regularization(self, ids: Tensor) -> Tensor:
        if self.l2 == 0:
            return super().regularization(ids)
        if self.l2_mode == "mba":
            rows = _batch_rows(ids, self.num_items + 1)
            return self.l2 * (self.table(rows).pow(2).sum(-1) / self.item_count[rows]).sum()
        return self.l2 * _l2(self.table, ids, self.l2_mode)


class ResEmbedding(ItemEmbedding):
    r"""Res-embedding: a central part from the item interest graph plus a small residual.

    .. math::
        \mathbf{E} = \mathbf{W} \cdot \mathbf{C}_b + \mathbf{R}, \qquad
        \mathbf{W} = g(\mathbf{Z})

    The central part ``W·Cb`` is computed by ``num_layers`` message-passing layers made by
    ``conv(embedding_dim, embedding_dim)`` over the graph given to :meth:`set_graph`. The
    residual ``R`` starts at zero and is kept small by ``residual_l2``. An item with no graph
    neighbours has a zero central part (eq. 4 taken literally), so its embedding is its
    residual; pass ``self_loops=True`` to let every item's own basis vector join its neighbours.

    The graph is stored in buffers, so a checkpoint restores it without the training data.

    Args:
        num_items: Number of items ``H``.
        embedding_dim: Size of each embedding.
        conv: Factory ``(in_channels, out_channels) -> MessagePassing``: the aggregator ``g``.
        residual_l2: Coefficient :math:`\lambda` of the residual L2 (paper: 0.006).
        l2_mode: ``"batch"`` (rows in the mini-batch) or ``"table"`` (every row).
        num_layers: Propagation depth (1 in the paper).
        self_loops: Add a self-loop of weight 1 to every item when the graph is set.
        propagation: ``"local"`` computes central vectors only for the batch's distinct items,
            on the subgraph of their ``num_layers``-hop neighbourhood; ``"full"`` propagates over
            the whole graph; ``"auto"`` takes the subgraph, for layers where both are exact,
            when it holds fewer than the layers' ``LOCAL_SHARE`` of the graph's edges. Both are
            declared on the layer's class (``EXACT_ON_SUBGRAPH``, ``LOCAL_SHARE``, see
            :mod:`resemb_pl.nn.conv.capabilities`); a layer that declares nothing is
            propagated over the whole graph.
        init_std: Standard deviation of the normal initialisation of ``Cb``.

    Example::

        emb = ResEmbedding(4, 8, conv=GCNNormConv)
        emb.set_graph(build_interest_graph([1, 2, 3, 4], [4], num_items=4))
        emb(torch.tensor([1, 2])).shape  # (2, 8)
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int,
        conv: ConvFactory = MeanConv,
        residual_l2: float = 0.006,
        *,
        l2_mode: L2Mode = "batch",
        num_layers: int = 1,
        self_loops: bool = False,
        propagation: Literal["auto", "full", "local"] = "auto",
        init_std: float = 0.05,
    ) -> None:
        super().__init__()
        _check_sizes(num_items, embedding_dim, residual_l2=residual_l2, init_std=init_std)
        require("model.embedding.num_layers", num_layers, 1)
        if l2_mode not in ("batch", "table"):
            raise ConfigError(f"model.embedding.l2_mode: choose batch or table, got {l2_mode!r}")
        if propagation not in ("auto", "full", "local"):
            raise ConfigError(
                f"model.embedding.propagation: choose auto, full or local, got {propagation!r}"
            )
        self.num_items, self.embedding_dim = num_items, embedding_dim
        self.residual_l2, self.l2_mode = residual_l2, l2_mode
        self.self_loops, self.propagation = self_loops, propagation
        self.basis = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        self.residual = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.basis.weight, std=init_std)
        nn.init.zeros_(self.residual.weight)
        with torch.no_grad():
            self.basis.weight[0].zero_()
        self.convs = nn.ModuleList(conv(embedding_dim, embedding_dim) for _ in range(num_layers))
        caps = [capabilities(c) for c in self.convs]
        # Layers that normalise with whole-graph degrees get them once, in set_graph, and are
        # then told so at each call (``normalized=True``).
        self._prenormalize = [
            c for c, cap in zip(self.convs, caps, strict=True) if cap.prenormalize
        ]
        self._calls = [({"normalized": True} if cap.prenormalize else {}, cap.edge_weight)
                       for cap in caps]
        # Layers that implement PyG's message_and_aggregate (``fuse``) get the graph as a CSR
        # adjacency, which the graph's CSR order gives for free; the others get edge_index.
        self._csr = all(getattr(c, "fuse", False) for c in self.convs)
        inexact = sorted({type(c).__name__ for c, cap in zip(self.convs, caps, strict=True)
                          if not cap.exact_on_subgraph})
        if propagation == "local" and inexact:
            raise ConfigError(
                f"propagation='local' is not exact for {inexact}; use 'full' or 'auto', or "
                "declare EXACT_ON_SUBGRAPH = True on the layer's class"
            )
        self._local_ok = not inexact and propagation != "full"
        self._local_share = min(cap.local_share for cap in caps)
        # One fused layer that takes (x_src, x_dst): the rows' CSR ranges are the adjacency.
        self._bipartite = num_layers == 1 and self._csr and caps[0].bipartite
        self._target_index = self._bipartite and caps[0].target_index
        # The graph, sorted by target item (CSR): edge_index[1] ascending, and its row pointer.
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))
        self.register_buffer("rowptr", torch.zeros(num_items + 2, dtype=torch.long))
        # Compile the aggregation's backward scatter (use_sparse_gradients(fused=True)).
        self._fused = False
        self._transpose_key: tuple | None = None  # see _graph_transpose
        self._transpose: Transpose | None = None
        self._padding_in_edges = False  # whether the graph has edges into row 0 (padding)
        self._looked_up: tuple[Tensor, Tensor] | None = None  # see regularization

    # -- graph -------------------------------------------------------------------------------
    def set_graph(self, data: Data) -> None:
        """Set the item interest graph (edges ``j -> i``, ``num_nodes = num_items + 1``)."""
        if data.num_nodes != self.num_items + 1:
            raise ValueError(
                f"graph has {data.num_nodes} nodes but the embedding has {self.num_items + 1} rows"
            )
        device = self.basis.weight.device
        _check_edges(data.edge_index, self.num_items + 1, "graph")
        edge_index = data.edge_index.to(device)
        weight = data.edge_weight if data.edge_weight is not None else None
        weight = (
            torch.ones(edge_index.size(1), device=device) if weight is None else weight.to(device)
        ).float()
        if self.self_loops:
            loop = torch.arange(1, self.num_items + 1, device=device)
            edge_index = torch.cat([edge_index, torch.stack([loop, loop])], 1)
            weight = torch.cat([weight, torch.ones(self.num_items, device=device)])
        for c in self._prenormalize[:1]:  # all layers share one graph: normalise once
            edge_index, weight = c.normalize_graph(edge_index, weight, self.num_items + 1)
        order = torch.sort(edge_index[1] * (self.num_items + 1) + edge_index[0])[1]
        self.edge_index, self.edge_weight = edge_index[:, order], weight[order]
        self.rowptr = _row_pointer(self.edge_index[1], self.num_items + 1)
        self._graph_changed()

    def _graph_changed(self) -> None:
        self._transpose_key = None
        self._padding_in_edges = bool(self.rowptr[1] > 0)  # read once, not a sync per step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The graph buffers take the size stored in the checkpoint.
        for name in ("edge_index", "edge_weight"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "edge_index" in state_dict:
            self._check_loaded_graph(prefix)
        self._graph_changed()

    def _check_loaded_graph(self, prefix: str) -> None:
        """Refuse a checkpoint whose graph buffers do not make a CSR graph of this embedding's
        items (every pass indexes rows with them; the compiled loops do so unchecked)."""
        size = self.num_items + 1
        _check_edges(self.edge_index, size, f"checkpoint {prefix}edge_index", CheckpointError)
        targets = self.edge_index[1]
        if (self.edge_weight.shape != targets.shape
                or not torch.equal(self.rowptr, _row_pointer(targets, size))
                or bool((targets[1:] < targets[:-1]).any())):
            raise CheckpointError(
                f"checkpoint {prefix}edge_index / edge_weight / rowptr do not make a graph "
                f"sorted by target over {size} nodes"
            )

    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), .share_memory() ... give the buffers new storage: transpose again.
        self._transpose_key = None
        return super()._apply(fn, recurse)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, ids: Tensor) -> Tensor:
        # Distinct rows only: each table is read (and, sparse, gets a gradient) once per row,
        # and the rows are spread to the positions by index_select, whose backward is one
        # index_add (advanced indexing's backward, an accumulating index_put, is ~15x slower
        # on a CPU at DIN's 52k positions per batch), one compiled loop on a CPU (_Rows).
        rows, inverse = distinct(ids, self.num_items + 1)
        central = (self.central(rows) if self._use_local(rows)
                   else _Rows.apply(self.central_table(), rows, None, True))
        residual = lookup(self.residual, rows)
        # The regulariser of these rows reads the same residual rows (see regularization),
        # until a backward pass goes through them and frees their graph. Only a batch
        # penalty can use them.
        self._looked_up = None
        if residual.requires_grad and self.residual_l2 > 0 and self.l2_mode == "batch":
            self._looked_up = (rows, residual)
            residual.register_hook(self._forget_rows)
        out = central + residual
        return _Rows.apply(out, inverse.reshape(-1), None, False).view(*ids.shape,
                                                                      self.embedding_dim)

    def central_table(self) -> Tensor:
        """The central embedding ``W·Cb`` of every item by full-graph propagation."""
        return self._propagate(self.basis.weight, self.edge_index, self.edge_weight, self.rowptr,
                               self._graph_transpose() if self._csr else None)

    def _graph_transpose(self) -> Transpose:
        """The whole graph's :func:`~resemb_pl.nn.conv.spmm.transpose`, made once per graph
        (and device): the fused layers' backward passes run over it. Setting or loading a
        graph, or moving the module, drops it; so does writing into the graph's buffers."""
        key = (self.edge_index.data_ptr(), self.edge_index._version, self.edge_index.size(1),
               self.rowptr.data_ptr(), self.rowptr._version, self.edge_index.device)
        if self._transpose_key != key:
            self._transpose = transpose(self.rowptr, self.edge_index[0], self.num_items + 1)
            self._transpose_key = key
        return self._transpose

    def central(self, rows: Tensor) -> Tensor:
        """The central embedding of the distinct items ``rows``, on their subgraph.

        The subgraph (:func:`~resemb_pl.nn.subgraph.in_subgraph`) holds the in-edges of every
        item within ``num_layers - 1`` hops of ``rows``, so the answer equals
        ``central_table()[rows]`` for layers that are exact on a subgraph.
        """
        if rows.numel() == 0:
            return self.basis.weight.new_zeros(0, self.embedding_dim)
        if self._bipartite and not self.basis.sparse:
            # The rows' in-edges as a (rows x items) adjacency over the whole basis table: no
            # subgraph to relabel, and its gradient is the dense table's anyway.
            x = self.basis.weight
            if native.usable(x, rows):  # compiled loops: no transpose for the backward pass
                crow, col, weight = native.in_edges(self.rowptr, self.edge_index[0],
                                                    self.edge_weight, rows)
                graph_t = None
            else:
                e, count, _ = in_edges(self.rowptr, rows)
                crow = torch.zeros(rows.numel() + 1, dtype=torch.long, device=rows.device)
                torch.cumsum(count, 0, out=crow[1:])
                col = self.edge_index[0].index_select(0, e)
                weight = self.edge_weight.index_select(0, e)
                graph_t = transpose(crow, col, self.num_items + 1)
            adj_t = csr_adjacency(crow, col, weight, (rows.numel(), self.num_items + 1), graph_t)
            kwargs, _ = self._calls[0]
            # The targets as rows of x where the layer takes them so (one table-sized gradient
            # for the basis, not two) and that is exact: the padding row, whose lookup gets no
            # gradient, has no in-edges, so no query gradient either.
            x_dst = (rows if self._target_index and not self._padding_in_edges
                     else lookup(self.basis, rows))
            return self.convs[0]((x, x_dst), adj_t, **kwargs)
        sub = in_subgraph(self.rowptr, self.edge_index[0], rows, len(self.convs))
        weight = self.edge_weight.index_select(0, sub.edge_id)
        # The subgraph's transpose (one sort of its edges) lets the fused layers' backward
        # passes sum over sources with embedding_bag instead of scattering every edge.
        graph_t = (transpose(sub.rowptr, sub.edge_index[0], sub.nodes.numel())
                   if self._csr and not self._fused and not native.usable(weight, rows)
                   else None)
        x = self._propagate(self.basis(sub.nodes), sub.edge_index, weight, sub.rowptr, graph_t)
        return x[: rows.numel()]

    def _propagate(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor,
                   rowptr: Tensor, graph_t: Transpose | None = None) -> Tensor:
        """Run the layers on a graph whose edges are sorted by target with row pointer
        ``rowptr`` (one entry per node of ``x``, plus one), and its transpose if known."""
        if self._csr:
            adj_t = csr_adjacency(rowptr, edge_index[0], edge_weight, (x.size(0), x.size(0)),
                                  graph_t)
            with compiled_scatter(self._fused):
                for conv, (kwargs, _) in zip(self.convs, self._calls, strict=True):
                    x = conv(x, adj_t, **kwargs)
            return x
        for conv, (kwargs, takes_weight) in zip(self.convs, self._calls, strict=True):
            weight = {"edge_weight": edge_weight} if takes_weight else {}
            x = conv(x, edge_index, **weight, **kwargs)
        return x

    def use_sparse_gradients(self, fused: bool = False) -> list[nn.Parameter]:
        """As :meth:`ItemEmbedding.use_sparse_gradients`; training then propagates locally.

        With ``fused``, layers that aggregate through :func:`resemb_pl.nn.conv.spmm.spmm` get
        its compiled backward scatter (:func:`~resemb_pl.nn.conv.spmm.compiled_scatter`).
        """
        if not self._local_ok:
            raise ConfigError(
                "sparse embeddings need batch-local propagation, but propagation="
                f"{self.propagation!r} with {[type(c).__name__ for c in self.convs]} is full-graph"
            )
        self._fused = fused
        return super().use_sparse_gradients()

    def _use_local(self, rows: Tensor) -> bool:
        """Whether the distinct ``rows`` are propagated on their subgraph (see ``propagation``)."""
        if not self._local_ok:
            return False
        if self.propagation == "local" or (self.basis.sparse and torch.is_grad_enabled()):
            return True
        # auto: the subgraph's first hop holds the rows' in-edges exactly; each further hop
        # multiplies it by about the mean in-degree. It pays below the layers' LOCAL_SHARE of
        # the graph (see resemb_pl.nn.conv.capabilities).
        edges = int((self.rowptr.index_select(0, rows + 1)
                     - self.rowptr.index_select(0, rows)).sum())
        fan = max(1.0, self.edge_index.size(1) / max(1, self.num_items))
        return edges * fan ** (len(self.convs) - 1) < self._local_share * self.edge_index.size(1)

    # -- regulariser -------------------------------------------------------------------------
    def _forget_rows(self, grad: Tensor) -> None:
        self._looked_up = None

    def regularization(self, ids: Tensor) -> Tensor:
        """``residual_l2`` times the mean squared norm of the residual rows (eq. 9).

        With ``l2_mode="batch"`` the rows are the distinct items of ``ids`` (padding excluded),
        whatever their order or shape; with ``"table"`` every row. When ``ids`` hold the items
        of the last forward pass (as a training step's do) and no backward pass has gone
        through it yet, the penalty reads the residual rows that forward looked up, so they are
        found, read and given their gradient once per step (on Amazon Sports this halves the
        regulariser's cost); the numbers are the same either way.
        """
        if self.residual_l2 == 0:
            return super().regularization(ids)
        looked_up, self._looked_up = self._looked_up, None
        if looked_up is not None and torch.is_grad_enabled():
            rows, residual = looked_up
            if _same_items(ids, rows, self.num_items + 1):
                # The rows of the forward pass: no second lookup, and the penalty's gradient
                # joins the forward's before the one copy into the table's gradient.
                square = residual.pow(2).sum(-1)
                padding = rows == 0  # the forward's rows may hold padding; the penalty's do not
                count = rows.numel() - int(padding.sum())
                if count < rows.numel():
                    square = square.masked_fill(padding, 0)
                return self.residual_l2 * square.sum() / max(count, 1)
        return self.residual_l2 * _l2(self.residual, ids, self.l2_mode)
