"""Deep Interest Network, the main backbone of the res-embedding paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, LocalActivationUnit
from resemb_pl.nn.models.base import CTRBackbone


class DIN(CTRBackbone):
    """Deep Interest Network (Zhou et al., KDD 2018) as in the res-embedding paper §5.1.

    A local activation unit weights the history w.r.t. the target (no softmax), then an MLP
    scores ``[pooled, target, pooled * target]``.

    Args:
        embedding: The item embedding.
        num_categories: Number of categories.
        attention_hidden: Hidden widths of the activation unit.
        hidden: Hidden widths of the MLP (paper: 200-80-1).
        act: ``"prelu"`` or ``"dice"`` in the MLP (the activation unit uses PReLU).
        dropout: Dropout in the MLP.
        jagged: Whether the activation unit scores only the valid history positions
            (``True``), all of them (``False``) or picks per batch (``None``, default: jagged
            when few are valid); both give the same numbers, see
            :class:`~resemb_pl.nn.layers.LocalActivationUnit`.

    Example::

        model = DIN(PlainEmbedding(100, 18), num_categories=5)
        logits = model(hist, hist_cat, target, target_cat)
    """

    def __init__(
        self,
        embedding: ItemEmbedding,
        num_categories: int,
        attention_hidden: Sequence[int] = (80, 40),
        hidden: Sequence[int] = (200, 80),
        act: Activation = "prelu",
        dropout: float = 0.0,
        jagged: bool | None = None,
    ) -> None:
        super().__init__(embedding, num_categories)
        self.attention = LocalActivationUnit(self.dim, attention_hidden, "prelu", jagged)
        self.mlp = MLP(3 * self.dim, hidden, 1, act, dropout)

    def forward(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor) -> Tensor:
        mask = hist > 0
        if self.attention.use_jagged(mask):
            # The jagged unit reads the valid positions only: look up only those, without
            # placing them into a padded (B, L, dim) tensor first.
            h, flat, t = self.embed_valid(hist, hist_cat, target, target_cat, mask)
            sample = torch.div(flat, hist.size(1), rounding_mode="floor")
            return self._out(self.attention.pool(h, t, sample), t)
        return self.score(*self.embed(hist, hist_cat, target, target_cat))

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self._out(self.attention(hist, target, mask), target)

    def _out(self, pooled: Tensor, target: Tensor) -> Tensor:
        return self.mlp(torch.cat([pooled, target, pooled * target], -1)).squeeze(-1)
