"""DeepFM (Guo et al., IJCAI 2017) as in the DIN paper's comparison (DIN §6.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, FactorizationMachine, sum_pool
from resemb_pl.nn.models.base import CTRBackbone


class DeepFM(CTRBackbone):
    r"""DeepFM: first-order terms, an FM over four fields, and a deep MLP sharing the embeddings.

    The fields are the target item, the target category, the sum-pooled history items and the
    sum-pooled history categories, each a vector :math:`\mathbf{f}_k \in \mathbb{R}^d`.

    .. math::
        \mathrm{logit} = \mathbf{w}^\top[\mathbf{f}_1, \ldots, \mathbf{f}_4]
        + \sum_{k < k'} \langle \mathbf{f}_k, \mathbf{f}_{k'} \rangle
        + \mathrm{MLP}([\mathbf{f}_1, \ldots, \mathbf{f}_4])

    Args:
        embedding: The item embedding.
        num_categories: Number of categories.
        hidden: Hidden widths of the deep MLP.
        act: Activation of the hidden layers.
        dropout: Dropout in the MLP.

    Example::

        model = DeepFM(PlainEmbedding(100, 18), num_categories=5)
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
        self.linear = nn.Linear(2 * self.dim, 1)
        self.mlp = MLP(2 * self.dim, hidden, 1, act, dropout)
        self.fm = FactorizationMachine()

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        x = torch.cat([target, sum_pool(hist, mask)], -1)
        fields = x.view(x.size(0), 4, -1)  # item ‖ category per position: 4 fields of width d
        return (self.linear(x) + self.mlp(x)).squeeze(-1) + self.fm(fields)
