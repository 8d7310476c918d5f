"""Wide & Deep (Cheng et al., 2016) as in the DIN paper's comparison (DIN §6.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from resemb_pl.errors import require
from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, sum_pool
from resemb_pl.nn.models.base import CTRBackbone

# Odd 61-bit multiplier of the pair hash (a*M + b mod buckets): fits int64 for ids < 2**31.
_MIX = 0x9E3779B97F4A7C1


def cross_bucket(left: Tensor, right: Tensor, num_buckets: int) -> Tensor:
    """Hash the id pairs ``(left, right)`` into ``[0, num_buckets)``."""
    return torch.remainder(left * _MIX + right, num_buckets)


class WideDeep(CTRBackbone):
    r"""Wide & Deep: a linear wide part with cross-product features plus a deep MLP.

    The wide part, as in DIN's comparison, is LR (see
    :class:`~resemb_pl.nn.models.LogisticRegression`) plus the cross-product of the behaviours
    and the candidate: every (history item, target item) pair and every (history category,
    target category) pair is hashed into a table of ``num_buckets`` scalar weights, and the
    weights of the pairs present are summed. The deep part is an MLP over
    ``[target, sum-pooled history]``.

    .. math::
        \mathrm{logit} = \mathbf{w}^\top[\mathbf{v}, \textstyle\sum_l \mathbf{e}_l]
        + \sum_l \big(c_{h(g_l, t)} + c'_{h(k_l, k_t)}\big) + \mathrm{MLP}(\ldots)

    Args:
        embedding: The item embedding.
        num_categories: Number of categories.
        num_buckets: Size of each hashed cross-product table.
        hidden: Hidden widths of the deep MLP.
        act: Activation of the hidden layers.
        dropout: Dropout in the MLP.

    Example::

        model = WideDeep(PlainEmbedding(100, 18), num_categories=5, num_buckets=1000)
        logits = model(hist, hist_cat, target, target_cat)  # (B,)
    """

    def __init__(
        self,
        embedding: ItemEmbedding,
        num_categories: int,
        num_buckets: int = 100_000,
        hidden: Sequence[int] = (200, 80),
        act: Activation = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(embedding, num_categories)
        require("model.backbone.num_buckets", num_buckets, 1)
        self.num_buckets = num_buckets
        self.linear = nn.Linear(2 * self.dim, 1)
        self.cross_item = nn.Embedding(num_buckets, 1)
        self.cross_category = nn.Embedding(num_buckets, 1)
        nn.init.zeros_(self.cross_item.weight)
        nn.init.zeros_(self.cross_category.weight)
        self.mlp = MLP(2 * self.dim, hidden, 1, act, dropout)

    def forward(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor) -> Tensor:
        h, t, mask = self.embed(hist, hist_cat, target, target_cat)
        x = torch.cat([t, sum_pool(h, mask)], -1)
        items = self.cross_item(cross_bucket(hist, target.unsqueeze(1), self.num_buckets))
        cat_pairs = cross_bucket(hist_cat, target_cat.unsqueeze(1), self.num_buckets)
        cats = self.cross_category(cat_pairs)
        cross = ((items + cats).squeeze(-1) * mask.to(items.dtype)).sum(1)
        return (self.linear(x) + self.mlp(x)).squeeze(-1) + cross
