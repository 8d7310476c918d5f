from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import is_torch_sparse_tensor

from resemb_pl.nn.conv.spmm import spmm
from resemb_pl.nn.layers import check_width


class GCNNormConv(MessagePassing):
    r"""Symmetrically normalised sum over the graph neighbours (the paper's GCN, eq. 7).

    .. math::
        \mathbf{c}_i = \sum_{j \in \mathcal{N}(i)} \frac{Z_{ij}}{\sqrt{d_i d_j}} \mathbf{b}_j,
        \qquad d_i = \sum_j Z_{ij}

    ``Z_ij`` is the edge weight (the co-occurrence count; 1 when ``edge_weight`` is ``None``).
    No self-loops are added. Parameter-free.

    The degrees are the whole graph's: inside :class:`~resemb_pl.nn.ResEmbedding` the weights
    are normalised once by :meth:`normalize_graph` when the graph is set (``PRENORMALIZE``) and
    passed with ``normalized=True``, so the layer is exact on a batch's subgraph. Called alone,
    it normalises the graph it is given.

    Args:
        in_channels: Size of each basis vector.
        out_channels: Must equal ``in_channels``; kept for the factory contract.
        normalize: If ``False``, ``edge_weight`` is always taken as already normalised (see
            :meth:`normalize_graph`), and nobody normalises it.

    Shapes:
        - **input:** ``x`` :math:`(|V|, F)`, ``edge_index`` :math:`(2, |E|)`,
          ``edge_weight`` :math:`(|E|)` *(optional)*; or ``edge_index`` a sparse adjacency
          :math:`(|V|, |V|)` (targets by sources) whose values are the weights
        - **output:** :math:`(|V|, F)`
    """

    EXACT_ON_SUBGRAPH = True  # given the whole graph's normalised weights
    PRENORMALIZE = True
    SUPPORTS_EDGE_WEIGHT = True
    SUPPORTS_BIPARTITE = True  # (x_src, x_dst) with a targets-by-sources adjacency
    LOCAL_SHARE = 0.35  # a weighted sum per edge, with the compiled CSR loops (Amazon Sports)

    def __init__(self, in_channels: int, out_channels: int, *, normalize: bool = True) -> None:
        check_width(self, in_channels, out_channels)
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.normalize = normalize

    def normalize_graph(
        self, edge_index: Tensor, edge_weight: OptTensor, num_nodes: int
    ) -> tuple[Tensor, Tensor]:
        """Return ``edge_index`` and the weights :math:`Z_{ij} / \\sqrt{d_i d_j}` of eq. 7."""
        edge_index, edge_weight = gcn_norm(
            edge_index, edge_weight, num_nodes, add_self_loops=False, flow=self.flow
        )
        return edge_index, edge_weight

    def forward(self, x: Tensor | PairTensor, edge_index: Adj, edge_weight: OptTensor = None, *,
                normalized: bool = False) -> Tensor:
        """Aggregate; ``normalized=True`` takes ``edge_weight`` from :meth:`normalize_graph`.

        ``x`` may be a pair ``(x_src, x_dst)`` with an adjacency of targets by sources, given
        weights normalised on the whole graph (``normalized=True``).
        """
        if self.normalize and not normalized:
            if isinstance(x, tuple):
                raise ValueError("'GCNNormConv' normalises a square graph; pass a pair "
                                 "(x_src, x_dst) with normalized=True")
            edge_index, edge_weight = self.normalize_graph(edge_index, edge_weight, x.size(0))
        # A sparse adjacency carries the weights as its values.
        elif edge_weight is None and not is_torch_sparse_tensor(edge_index):
            raise ValueError("'GCNNormConv(normalize=False)' needs the normalised edge_weight")
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor | PairTensor) -> Tensor:
        return spmm(adj_t, x[0] if isinstance(x, tuple) else x, reduce="sum")
