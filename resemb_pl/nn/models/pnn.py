"""Product-based Neural Network (Qu et al., ICDM 2016) as a backbone of the res-embedding paper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from resemb_pl.errors import ConfigError
from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, InnerProduct, OuterProduct, sum_pool
from resemb_pl.nn.models.base import CTRBackbone

Product = Literal["inner", "outer", "both"]


class PNN(CTRBackbone):
    r"""PNN: the MLP's input gains the products of the pooled history and the target (§5.1).

    With the sum-pooled history :math:`\mathbf{u}` and the target :math:`\mathbf{v}`, the MLP
    scores :math:`[\mathbf{u}, \mathbf{v}, \mathbf{u}^\top\mathbf{v}]` (IPNN),
    :math:`[\mathbf{u}, \mathbf{v}, \operatorname{vec}(\mathbf{u}\mathbf{v}^\top)]` (OPNN) or
    both.

    Args:
        embedding: The item embedding.
        num_categories: Number of categories.
        product: ``"inner"``, ``"outer"`` or ``"both"``.
        hidden: Hidden widths of the MLP (paper: 200-80-1).
        act: Activation of the hidden layers.
        dropout: Dropout in the MLP.

    Example::

        model = PNN(PlainEmbedding(100, 18), num_categories=5, product="inner")
        logits = model(hist, hist_cat, target, target_cat)  # (B,)
    """

    def __init__(
        self,
        embedding: ItemEmbedding,
        num_categories: int,
        product: Product = "both",
        hidden: Sequence[int] = (200, 80),
        act: Activation = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(embedding, num_categories)
        if product not in ("inner", "outer", "both"):
            raise ConfigError(
                f"model.backbone.product: choose inner, outer or both, not {product!r}"
            )
        self.product = product
        self.inner = InnerProduct() if product in ("inner", "both") else None
        self.outer = OuterProduct() if product in ("outer", "both") else None
        width = 2 * self.dim
        width += 1 if product in ("inner", "both") else 0
        width += self.dim**2 if product in ("outer", "both") else 0
        self.mlp = MLP(width, hidden, 1, act, dropout)

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pooled = sum_pool(hist, mask)
        parts = [pooled, target]
        if self.inner is not None:
            parts.append(self.inner(pooled, target))
        if self.outer is not None:
            parts.append(self.outer(pooled, target))
        return self.mlp(torch.cat(parts, -1)).squeeze(-1)
