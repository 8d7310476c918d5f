"""Logistic regression, the first baseline of the DIN paper's comparison (DIN §6.4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import sum_pool
from resemb_pl.nn.models.base import CTRBackbone


class LogisticRegression(CTRBackbone):
    r"""LR over the target item, its category and the bag of history items and categories.

    .. math::
        \mathrm{logit} = b + \mathbf{w}^\top [\mathbf{v}, \textstyle\sum_l \mathbf{e}_l]

    A linear function of a looked-up embedding is a per-id weight :math:`\mathbf{w}^\top
    \mathbf{e}_j`, so this is LR on the one-hot ids with its weights read through the item
    embedding: with :class:`~resemb_pl.nn.PlainEmbedding` every id keeps a free weight, and with
    :class:`~resemb_pl.nn.ResEmbedding` the weights of graph neighbours are tied through the
    central basis. There is no hidden layer and no feature interaction.

    Args:
        embedding: The item embedding.
        num_categories: Number of categories.

    Example::

        model = LogisticRegression(PlainEmbedding(100, 18), num_categories=5)
        logits = model(hist, hist_cat, target, target_cat)  # (B,)
    """

    def __init__(self, embedding: ItemEmbedding, num_categories: int) -> None:
        super().__init__(embedding, num_categories)
        self.linear = nn.Linear(2 * self.dim, 1)

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.linear(torch.cat([target, sum_pool(hist, mask)], -1)).squeeze(-1)
