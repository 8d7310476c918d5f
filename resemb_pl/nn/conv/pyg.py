"""PyG's built-in layers adapted, in this one place, to the conv contract of ``ResEmbedding``.

Contract: ``Layer(in_channels, out_channels, **kwargs)`` and
``forward(x, edge_index, edge_weight=None) -> Tensor``. The built-ins differ: ``GATConv`` and
``GATv2Conv`` take ``edge_attr`` third, ``SAGEConv`` takes ``size``, and ``LGConv`` has no
channel arguments. The bare built-ins also plug in (their capabilities are declared in
:data:`~resemb_pl.nn.conv.capabilities.BUILTIN_CAPABILITIES`); the adapters add what the bare
layer cannot do: use the interest graph's co-occurrence weights, and normalise once on the whole
graph (``PRENORMALIZE``) so that batch-local propagation stays exact.
"""

from __future__ import annotations

from torch import Tensor
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, LGConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor

from resemb_pl.errors import ConfigError, require
from resemb_pl.nn.layers import check_width


def _heads_width(module: object, out_channels: int, heads: int) -> int:
    require(f"{module.__class__.__name__}.heads", heads, 1)
    if out_channels % heads:
        raise ConfigError(
            f"'{module.__class__.__name__}' concatenates {heads} heads: out_channels="
            f"{out_channels} is not a multiple of heads"
        )
    return out_channels // heads


class GCNAdapterConv(GCNConv):
    r"""PyG's :class:`~torch_geometric.nn.conv.GCNConv` (a learned weight, self-loops, eq. 7).

    The normalisation :math:`\hat{D}^{-1/2}\hat{Z}\hat{D}^{-1/2}` is computed once on the whole
    graph by :meth:`normalize_graph` when ``ResEmbedding`` sets the graph, so the layer gives the
    same output on a batch's subgraph as on the whole graph.

    Args:
        in_channels: Size of each input vector.
        out_channels: Size of each output vector.
        **kwargs: Keyword arguments of ``GCNConv`` (``improved``, ``add_self_loops``, ``bias``).

    Shapes:
        - **input:** ``x`` :math:`(|V|, F_{in})`, ``edge_index`` :math:`(2, |E|)`,
          ``edge_weight`` :math:`(|E|)` *(optional)*
        - **output:** :math:`(|V|, F_{out})`
    """

    EXACT_ON_SUBGRAPH = True  # given the whole graph's normalised weights
    PRENORMALIZE = True
    SUPPORTS_EDGE_WEIGHT = True

    def normalize_graph(
        self, edge_index: Tensor, edge_weight: OptTensor, num_nodes: int
    ) -> tuple[Tensor, Tensor]:
        """Return the edges with self-loops and the weights of the symmetric normalisation."""
        return gcn_norm(edge_index, edge_weight, num_nodes, self.improved,
                        self.add_self_loops is not False, self.flow)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None, *,
                normalized: bool = False) -> Tensor:
        """``GCNConv``'s forward; ``normalized=True`` takes the weights of
        :meth:`normalize_graph` as they are."""
        if not (self.normalize and normalized):
            return super().forward(x, edge_index, edge_weight)
        out = self.propagate(edge_index, x=self.lin(x), edge_weight=edge_weight)
        return out if self.bias is None else out + self.bias


class LGAdapterConv(LGConv):
    r"""PyG's :class:`~torch_geometric.nn.conv.LGConv` (LightGCN) with the factory contract.

    Parameter-free like the paper's GCN aggregator, but with symmetric degree normalisation of
    the unweighted-by-default LightGCN form. Normalised once on the whole graph.

    Args:
        in_channels: Size of each basis vector.
        out_channels: Must equal ``in_channels``.
        normalize: Normalise the edge weights symmetrically.

    Shapes:
        - **input:** ``x`` :math:`(|V|, F)`, ``edge_index`` :math:`(2, |E|)`,
          ``edge_weight`` :math:`(|E|)` *(optional)*
        - **output:** :math:`(|V|, F)`
    """

    EXACT_ON_SUBGRAPH = True  # given the whole graph's normalised weights
    PRENORMALIZE = True
    SUPPORTS_EDGE_WEIGHT = True

    def __init__(self, in_channels: int, out_channels: int, *, normalize: bool = True) -> None:
        check_width(self, in_channels, out_channels)
        super().__init__(normalize=normalize)
        self.in_channels, self.out_channels = in_channels, out_channels

    def normalize_graph(
        self, edge_index: Tensor, edge_weight: OptTensor, num_nodes: int
    ) -> tuple[Tensor, Tensor]:
        """Return the edges and their weights :math:`Z_{ij} / \\sqrt{d_i d_j}`."""
        return gcn_norm(edge_index, edge_weight, num_nodes, add_self_loops=False, flow=self.flow)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None, *,
                normalized: bool = False) -> Tensor:
        """``LGConv``'s forward; ``normalized=True`` takes the weights of
        :meth:`normalize_graph` as they are."""
        if not (self.normalize and normalized):
            return super().forward(x, edge_index, edge_weight)
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"


class _WeightedAttention:
    r"""What the GAT adapters share: concatenated heads, the edge weight in the attention.

    ``heads`` heads of width ``out_channels // heads`` are concatenated, and
    :math:`\log(1 + Z_{ij})` enters the attention as a one-dimensional edge feature.
    """

    EXACT_ON_SUBGRAPH = True  # a softmax over i's in-edges (and its self-loop)
    SUPPORTS_EDGE_WEIGHT = True
    LOCAL_SHARE = 0.6  # attention: much work per edge

    def __init__(self, in_channels: int, out_channels: int, *, heads: int = 1,
                 use_edge_weight: bool = True, **kwargs) -> None:
        width = _heads_width(self, out_channels, heads)
        edge_dim = 1 if use_edge_weight else None
        super().__init__(in_channels, width, heads=heads, concat=True, edge_dim=edge_dim, **kwargs)

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        if self.edge_dim is None or edge_weight is None:
            return super().forward(x, edge_index)
        return super().forward(x, edge_index, edge_attr=edge_weight.log1p().view(-1, 1))


class GATAdapterConv(_WeightedAttention, GATConv):
    r"""PyG's :class:`~torch_geometric.nn.conv.GATConv` whose attention sees the edge weight.

    The co-occurrence weight :math:`Z_{ij}` enters the attention score as a one-dimensional
    edge feature (``edge_dim=1``). ``heads`` heads of width ``out_channels // heads`` are
    concatenated, so the output keeps the width ``out_channels``.

    Args:
        in_channels: Size of each input vector.
        out_channels: Size of each output vector (a multiple of ``heads``).
        heads: Number of attention heads.
        use_edge_weight: Feed :math:`\log(1 + Z_{ij})` to the attention; ``False`` ignores it.
        **kwargs: Keyword arguments of ``GATConv`` (``dropout``, ``add_self_loops``, ...).

    Shapes:
        - **input:** ``x`` :math:`(|V|, F_{in})`, ``edge_index`` :math:`(2, |E|)`,
          ``edge_weight`` :math:`(|E|)` *(optional)*
        - **output:** :math:`(|V|, F_{out})`
    """


class GATv2AdapterConv(_WeightedAttention, GATv2Conv):
    r"""PyG's :class:`~torch_geometric.nn.conv.GATv2Conv` whose attention sees the edge weight.

    As :class:`GATAdapterConv` (same arguments and shapes, ``**kwargs`` of ``GATv2Conv``), with
    GATv2's dynamic attention.
    """


class SAGEAdapterConv(SAGEConv):
    r"""PyG's :class:`~torch_geometric.nn.conv.SAGEConv` with ``edge_weight`` in its signature.

    GraphSAGE has no edge weights: ``edge_weight`` is accepted and ignored, so the layer can sit
    in any stack that passes it (SAGEConv's own third argument is ``size``).

    Args:
        in_channels: Size of each input vector.
        out_channels: Size of each output vector.
        **kwargs: Keyword arguments of ``SAGEConv`` (``aggr``, ``root_weight``, ...).

    Shapes:
        - **input:** ``x`` :math:`(|V|, F_{in})`, ``edge_index`` :math:`(2, |E|)`
        - **output:** :math:`(|V|, F_{out})`
    """

    EXACT_ON_SUBGRAPH = True  # aggregates i's in-edges
    SUPPORTS_EDGE_WEIGHT = True

    def forward(self, x: Tensor, edge_index: Adj, edge_weight: OptTensor = None) -> Tensor:
        return super().forward(x, edge_index)
