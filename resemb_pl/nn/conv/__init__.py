"""Central aggregators: one ``MessagePassing`` layer per file, and PyG's built-ins adapted.

Contract (see STYLE.md): ``Layer(in_channels, out_channels, **kwargs)`` and
``forward(x, edge_index, edge_weight=None) -> Tensor``. What a layer can do (exact on a
subgraph, pre-normalised, takes weights) is declared on its class: see :mod:`.capabilities`.
"""

from resemb_pl.nn.conv.capabilities import Capabilities, capabilities
from resemb_pl.nn.conv.dot_attention_conv import DotAttentionConv
from resemb_pl.nn.conv.gcn_norm_conv import GCNNormConv
from resemb_pl.nn.conv.mean_conv import MeanConv
from resemb_pl.nn.conv.pyg import (
    GATAdapterConv,
    GATv2AdapterConv,
    GCNAdapterConv,
    LGAdapterConv,
    SAGEAdapterConv,
)

__all__ = [
    "Capabilities",
    "DotAttentionConv",
    "GATAdapterConv",
    "GATv2AdapterConv",
    "GCNAdapterConv",
    "GCNNormConv",
    "LGAdapterConv",
    "MeanConv",
    "SAGEAdapterConv",
    "capabilities",
]
