from typing import Optional

from torch import Tensor
from torch_geometric.nn import MessagePassing
from torch_geometric.typing import Adj, OptTensor, PairTensor
from torch_geometric.utils import is_sparse, softmax

from resemb_pl.nn.conv.spmm import attend
from resemb_pl.nn.layers import check_width


class DotAttentionConv(MessagePassing):
    r"""Dot-product attention over the graph neighbours (the paper's ATT, eq. 8).

    .. math::
        \mathbf{c}_i = \sum_{j \in \mathcal{N}(i)} \alpha_{ij} \mathbf{b}_j, \qquad
        \alpha_{ij} = \operatorname{softmax}_{j \in \mathcal{N}(i)}
        (\mathbf{b}_i^\top \mathbf{b}_j)

    Edge weights are ignored. Parameter-free. Given a sparse adjacency the layer runs fused
    (:meth:`message_and_aggregate`, :func:`~resemb_pl.nn.conv.spmm.attend`): scores, softmax
    and sum in one autograd node, without a message vector per edge (on a CPU, one compiled
    loop forward and one backward, :mod:`~resemb_pl.nn.conv.native`).

    Args:
        in_channels: Size of each basis vector.
        out_channels: Must equal ``in_channels``; kept for the factory contract.

    Shapes:
        - **input:** ``x`` :math:`(|V|, F)` or a pair ``(x_src, x_dst)``, where ``x_dst`` may
          be the int64 rows of ``x_src`` that the targets are (``SUPPORTS_TARGET_INDEX``);
          ``edge_index`` :math:`(2, |E|)` or a sparse adjacency :math:`(|V|, |V|)` (targets by
          sources)
        - **output:** :math:`(|V|, F)`
    """

    EXACT_ON_SUBGRAPH = True  # a softmax over i's in-edges
    SUPPORTS_EDGE_WEIGHT = True
    SUPPORTS_BIPARTITE = True  # (x_src, x_dst) with a targets-by-sources adjacency
    SUPPORTS_TARGET_INDEX = True  # x_dst as the int64 rows of x_src
    LOCAL_SHARE = 0.45  # scores, softmax and sum per edge (compiled loops, Amazon Sports)

    def __init__(self, in_channels: int, out_channels: int) -> None:
        check_width(self, in_channels, out_channels)
        super().__init__(aggr="add")
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor | PairTensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        if isinstance(x, tuple) and not x[1].is_floating_point() and not is_sparse(edge_index):
            x = (x[0], x[0].index_select(0, x[1]))  # message() reads the targets' features
        return self.propagate(edge_index, x=x)

    # PyG's signature inspector needs typing.Optional here, not ``int | None``.
    def message(
        self, x_i: Tensor, x_j: Tensor, index: Tensor, ptr: OptTensor, size_i: Optional[int]  # noqa: UP045
    ) -> Tensor:
        alpha = softmax((x_i * x_j).sum(-1), index, ptr, size_i)
        return alpha.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor | PairTensor) -> Tensor:
        return attend(adj_t, *x) if isinstance(x, tuple) else attend(adj_t, x)
