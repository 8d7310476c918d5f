from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from resemb_pl.nn.embedding import ItemEmbedding
from resemb_pl.nn.layers import MLP, Activation, LocalActivationUnit


class CTRBackbone(nn.Module):
    """Base of the backbones: item and category embeddings concatenated per position.

    Subclasses implement :meth:`score` on the embedded history and target.

    Args:
        embedding: The item embedding (plain or res-embedding).
        num_categories: Number of categories ``C`` (the category table has ``C + 1`` rows).
    """

    def __init__(self, embedding: ItemEmbedding, num_categories: int) -> None:
        super().__init__()
        self.embedding = embedding
        self.category = nn.Embedding(num_categories + 1, embedding.embedding_dim, padding_idx=0)
        nn.init.normal_(self.category.weight, std=0.05)
        self.dim = 2 * embedding.embedding_dim  # width of one position

    def embed(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor):
        """Embed target and history in one call, so the central part is computed once."""
        ids = torch.cat([target.unsqueeze(1), hist], 1)
        cats = torch.cat([target_cat.unsqueeze(1), hist_cat], 1)
        e = torch.cat([self.embedding(ids), self.category(cats)], -1)
        return e[:, 1:], e[:, 0], hist > 0

    def forward(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor) -> Tensor:
        """Return the logits ``(B,)`` of the samples."""
        return self.score(*self.embed(hist, hist_cat, target, target_cat))

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError


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
    ) -> None:
        super().__init__(embedding, num_categories)
        self.attention = LocalActivationUnit(self.dim, attention_hidden, "prelu")
        self.mlp = MLP(3 * self.dim, hidden, 1, act, dropout)

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pooled = self.attention(hist, target, mask)
        return self.mlp(torch.cat([pooled, target, pooled * target], -1)).squeeze(-1)
