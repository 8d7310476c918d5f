"""CTR backbones: embeddings in, logits out."""

from resemb_pl.nn.models.base import CTRBackbone
from resemb_pl.nn.models.deepfm import DeepFM
from resemb_pl.nn.models.din import DIN
from resemb_pl.nn.models.lr import LogisticRegression
from resemb_pl.nn.models.mlp import EmbeddingMLP
from resemb_pl.nn.models.pnn import PNN
from resemb_pl.nn.models.wide_deep import WideDeep

__all__ = ["CTRBackbone", "DIN", "DeepFM", "EmbeddingMLP", "LogisticRegression", "PNN", "WideDeep"]
