"""The base class of the CTR backbones: embeddings in, logits out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resemb_pl.nn.embedding import ItemEmbedding


class CTRBackbone(nn.Module):
    """Base of the backbones: item and category embeddings concatenated per position.

    Subclasses implement :meth:`score` on the embedded history and target. ``CTRTask`` builds
    its backbone as ``backbone(embedding, num_categories)``, so the CLI's ``model.backbone``
    accepts this class and its subclasses, ours (listed by ``resemb-pl fit --help``) or a
    user's, given by ``class_path``; its further arguments come from ``init_args``.

    Args:
        embedding: The item embedding (plain or res-embedding).
        num_categories: Number of categories ``C`` (the category table has ``C + 1`` rows).

    Example::

        class SumPool(CTRBackbone):
            def __init__(self, embedding: ItemEmbedding, num_categories: int) -> None:
                super().__init__(embedding, num_categories)
                self.out = nn.Linear(2 * self.dim, 1)

            def score(self, hist, target, mask):
                pooled = (hist * mask.unsqueeze(-1)).sum(1)
                return self.out(torch.cat([pooled, target], -1)).squeeze(-1)
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
        """The logits ``(B,)`` from the history ``(B, L, dim)``, the target ``(B, dim)`` and the
        history's mask ``(B, L)`` (``False`` at padding)."""
        raise NotImplementedError
