"""Central aggregators: one ``MessagePassing`` layer per file.

Contract (see STYLE.md): ``Layer(in_channels, out_channels, **kwargs)`` and
``forward(x, edge_index, edge_weight=None) -> Tensor``.
"""

from resemb_pl.nn.conv.dot_attention_conv import DotAttentionConv
from resemb_pl.nn.conv.gcn_norm_conv import GCNNormConv
from resemb_pl.nn.conv.mean_conv import MeanConv

__all__ = ["DotAttentionConv", "GCNNormConv", "MeanConv"]
