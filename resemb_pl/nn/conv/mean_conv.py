from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, OptTensor, PairTensor

from resemb_pl.nn.conv.spmm import spmm
from resemb_pl.nn.layers import check_width


class MeanConv(MessagePassing):
    r"""Averages the basis vectors of each item's graph neighbours (the paper's AVG, eq. 6).

    .. math::
        \mathbf{c}_i = \frac{1}{|\mathcal{N}(i)|} \sum_{j \in \mathcal{N}(i)} \mathbf{b}_j

    Edge weights are ignored: every kept neighbour counts once. An item with no neighbours gets
    a zero vector.

    Args:
        in_channels: Size of each basis vector.
        out_channels: Must equal ``in_channels``; kept for the factory contract.

    Shapes:
        - **input:** ``x`` :math:`(|V|, F)`, ``edge_index`` :math:`(2, |E|)` or a sparse
          adjacency :math:`(|V|, |V|)` (targets by sources)
        - **output:** :math:`(|V|, F)`
    """

    EXACT_ON_SUBGRAPH = True  # the mean over i's in-edges
    SUPPORTS_EDGE_WEIGHT = True
    SUPPORTS_BIPARTITE = True  # (x_src, x_dst) with a targets-by-sources adjacency
    LOCAL_SHARE = 0.35  # a sum per edge, with the compiled CSR loops (Amazon Sports)

    def __init__(self, in_channels: int, out_channels: int) -> None:
        check_width(self, in_channels, out_channels)
        super().__init__(aggr="mean")
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor | PairTensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        return self.propagate(edge_index, x=x)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor | PairTensor) -> Tensor:
        return spmm(adj_t, x[0] if isinstance(x, tuple) else x, reduce="mean", weighted=False)

