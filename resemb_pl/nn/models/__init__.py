"""CTR backbones: embeddings in, logits out."""

from resemb_pl.nn.models.din import DIN, CTRBackbone

__all__ = ["CTRBackbone", "DIN"]
