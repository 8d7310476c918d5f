"""The basic Embedding&MLP model of the res-embedding paper (§5.1): sum pooling, then an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, sum_pool
from resemb_pl.nn.models.base import CTRBackbone


class EmbeddingMLP(CTRBackbone):
    """Embedding&MLP: ``[target, sum-pooled history]`` scored by an MLP (paper's "MLP").

    Args:
        embedding: The item embedding (plain or res-embedding).
        num_categories: Number of categories.
        hidden: Hidden widths of the MLP (paper: 200-80-1).
        act: Activation of the hidden layers.
        dropout: Dropout in the MLP.

    Example::

        model = EmbeddingMLP(PlainEmbedding(100, 18), num_categories=5)
        logits = model(hist, hist_cat, target, target_cat)  # (B,)
    """

    def __init__(
        self,
        embedding: ItemEmbedding,
        num_categories: int,
        hidden: Sequence[int] = (200, 80),
        act: Activation = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(embedding, num_categories)
        self.mlp = MLP(2 * self.dim, hidden, 1, act, dropout)

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.mlp(torch.cat([sum_pool(hist, mask), target], -1)).squeeze(-1)
