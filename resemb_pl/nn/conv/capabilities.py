"""What :class:`~resemb_pl.nn.ResEmbedding` needs to know about a layer, declared on its class.

A layer declares its capabilities as class attributes, as PyG declares
``SUPPORTS_FUSED_EDGE_INDEX``:

- ``EXACT_ON_SUBGRAPH``: the layer's output for a node depends only on the node's own vector
  and its in-edges (sources, weights), so ``k`` layers on the ``k``-hop in-neighbourhood of a
  batch (:func:`~resemb_pl.nn.subgraph.in_subgraph`) give the same rows as on the whole graph,
  and the embedding may propagate batch-locally.
- ``PRENORMALIZE``: the layer normalises the edge weights with whole-graph statistics (degrees)
  when its ``normalize`` option is on. It then implements
  ``normalize_graph(edge_index, edge_weight, num_nodes) -> (edge_index, edge_weight)``, which
  the embedding calls once on the whole graph when the graph is set, and
  ``forward(..., normalized=True)``, which takes those weights as they are. Turning the
  normalisation off is the layer's own option (``normalize=False``, as in PyG's ``GCNConv``).
- ``SUPPORTS_EDGE_WEIGHT``: ``forward`` takes ``edge_weight`` as a keyword.
- ``SUPPORTS_BIPARTITE``: ``forward`` takes ``x`` as a pair ``(x_src, x_dst)`` with a sparse
  adjacency of targets by sources (PyG's ``PairTensor`` convention). One such layer lets the
  embedding propagate a batch's rows without relabelling a subgraph: the rows' CSR ranges
  of the whole graph are the adjacency, the whole table the sources.
- ``SUPPORTS_TARGET_INDEX``: with ``SUPPORTS_BIPARTITE``, ``x_dst`` may also be an int64
  tensor, the rows of ``x_src`` that the targets are (``x_dst = x_src[index]``); the layer
  then reads the targets' features from ``x_src`` and adds their gradient into ``x_src``'s. A
  layer that uses ``x_dst`` (attention's queries) saves the embedding a lookup whose gradient
  is a second table-sized tensor for autograd to add to the first.
- ``LOCAL_SHARE``: for an exact layer, the share of the graph's edges below which a batch's
  subgraph is cheaper to extract and propagate than the whole graph (``propagation="auto"``).
  Extracting costs about the same per edge whatever the layer, so it pays sooner for layers
  with more work per edge. Measured on Amazon Sports on a CPU (``python scripts/benchmark.py
  --propagation``), where the built-in layers run the compiled CSR loops of
  :mod:`~resemb_pl.nn.conv.native`: 0.35 for :class:`~resemb_pl.nn.conv.GCNNormConv` and
  :class:`~resemb_pl.nn.conv.MeanConv` (0.25 in eager PyTorch, the default for other layers),
  0.45 for :class:`~resemb_pl.nn.conv.DotAttentionConv` (0.4 eager); PyG's attention layers,
  whose subgraph is relabelled and whose messages are materialised per edge, are given 0.6
  (not measured).

A layer that declares nothing (a PyG layer not in :data:`BUILTIN_CAPABILITIES`, or a user's
layer) is taken as **not** exact on a subgraph, so the whole graph is propagated, and as not
pre-normalising; it gets ``edge_weight`` if its ``forward`` has a parameter of that name (the
conv contract of STYLE.md), so a foreign layer whose third argument is something else
(``size``, ``edge_attr``) is called without the weights. To declare a layer exact, set the
attribute on its class::

    class MyConv(MessagePassing):
        EXACT_ON_SUBGRAPH = True  # output at i reads only x_i and i's in-edges
        SUPPORTS_EDGE_WEIGHT = False  # forward(x, edge_index) has no edge_weight

Subclasses inherit their base's declaration (Python class attributes); PyG's built-ins, which
cannot carry our attributes, are declared in :data:`BUILTIN_CAPABILITIES` for their exact
class only, so a subclass of one of them declares its own.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

from torch import nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GraphConv,
    LGConv,
    SAGEConv,
    TransformerConv,
)

_NAMES = ("EXACT_ON_SUBGRAPH", "PRENORMALIZE", "SUPPORTS_EDGE_WEIGHT", "SUPPORTS_BIPARTITE",
          "SUPPORTS_TARGET_INDEX", "LOCAL_SHARE")

#: Capabilities of a layer that declares none (``SUPPORTS_EDGE_WEIGHT`` is read from the
#: signature of its ``forward``).
DEFAULTS = {"EXACT_ON_SUBGRAPH": False, "PRENORMALIZE": False, "SUPPORTS_BIPARTITE": False,
            "SUPPORTS_TARGET_INDEX": False, "LOCAL_SHARE": 0.25}

#: PyG's built-ins as ``ResEmbedding`` calls them. Attention, GraphSAGE, GraphConv and the
#: graph transformer read only the target and its in-edges. ``GCNConv`` and ``LGConv`` normalise
#: with the degrees of the graph they are given, which on a subgraph are not the whole graph's:
#: use :class:`~resemb_pl.nn.conv.GCNAdapterConv` / :class:`~resemb_pl.nn.conv.LGAdapterConv`,
#: which pre-normalise. The attention layers' third argument is ``edge_attr`` and SAGEConv's is
#: ``size``, so they are called without ``edge_weight``.
BUILTIN_CAPABILITIES: dict[type, dict[str, bool]] = {
    GATConv: {"EXACT_ON_SUBGRAPH": True, "SUPPORTS_EDGE_WEIGHT": False, "LOCAL_SHARE": 0.6},
    GATv2Conv: {"EXACT_ON_SUBGRAPH": True, "SUPPORTS_EDGE_WEIGHT": False, "LOCAL_SHARE": 0.6},
    TransformerConv: {"EXACT_ON_SUBGRAPH": True, "SUPPORTS_EDGE_WEIGHT": False, "LOCAL_SHARE": 0.6},
    SAGEConv: {"EXACT_ON_SUBGRAPH": True, "SUPPORTS_EDGE_WEIGHT": False},
    GraphConv: {"EXACT_ON_SUBGRAPH": True, "SUPPORTS_EDGE_WEIGHT": True},
    GCNConv: {"EXACT_ON_SUBGRAPH": False, "SUPPORTS_EDGE_WEIGHT": True},
    LGConv: {"EXACT_ON_SUBGRAPH": False, "SUPPORTS_EDGE_WEIGHT": True},
}


class Capabilities(NamedTuple):
    """The capabilities of one layer instance.

    Attributes:
        exact_on_subgraph: Batch-local propagation gives the whole graph's rows.
        prenormalize: The embedding normalises the whole graph once with the layer's
            ``normalize_graph`` and calls ``forward(..., normalized=True)``.
        edge_weight: ``forward`` takes ``edge_weight``.
        local_share: ``propagation="auto"`` propagates a batch's subgraph when it holds fewer
            than this share of the graph's edges.
        bipartite: ``forward`` takes ``(x_src, x_dst)`` with a targets-by-sources adjacency.
        target_index: ``x_dst`` may be the int64 rows of ``x_src`` that the targets are.
    """

    exact_on_subgraph: bool
    prenormalize: bool
    edge_weight: bool
    local_share: float = 0.25
    bipartite: bool = False
    target_index: bool = False


def capabilities(layer: nn.Module) -> Capabilities:
    """Read the capabilities ``layer`` declares (class attributes, or the built-ins' table).

    Example::

        capabilities(MeanConv(8, 8))  # Capabilities(True, False, True, 0.35, True, False)
        capabilities(GCNNormConv(8, 8, normalize=False)).prenormalize  # False
    """
    cls = type(layer)
    declared = {name: getattr(cls, name) for name in _NAMES if hasattr(cls, name)}
    values = {**DEFAULTS, **BUILTIN_CAPABILITIES.get(cls, {}), **declared}
    if "SUPPORTS_EDGE_WEIGHT" not in values:
        parameters = inspect.signature(layer.forward).parameters
        values["SUPPORTS_EDGE_WEIGHT"] = "edge_weight" in parameters
    return Capabilities(
        exact_on_subgraph=bool(values["EXACT_ON_SUBGRAPH"]),
        prenormalize=bool(values["PRENORMALIZE"]) and bool(getattr(layer, "normalize", True)),
        edge_weight=bool(values["SUPPORTS_EDGE_WEIGHT"]),
        local_share=float(values["LOCAL_SHARE"]),
        bipartite=bool(values["SUPPORTS_BIPARTITE"]),
        target_index=bool(values["SUPPORTS_BIPARTITE"]) and bool(values["SUPPORTS_TARGET_INDEX"]),
    )
