"""The base class of the CTR backbones: embeddings in, logits out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from resemb_pl.nn.embedding import ItemEmbedding

#: Valid fraction of a batch's history positions below which :meth:`CTRBackbone.embed` looks up
#: only the valid positions (``scripts/bench_attention.py --embed``).
PACK_BELOW = 0.5


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
        """Embed target and history in one call, so the central part is computed once.

        Returns the history ``(B, L, dim)``, the target ``(B, dim)`` and the mask ``(B, L)``.
        Padding (item 0) embeds to zeros. When fewer than :data:`PACK_BELOW` of the history's
        positions are valid, only the valid ones are looked up (:meth:`embed_valid`) and placed
        into a zero tensor: the same numbers, forward and backward, for a fraction of the
        lookups (on Amazon Sports 13% of the positions are valid).
        """
        mask = hist > 0
        valid = None if torch.compiler.is_compiling() or mask.numel() == 0 else int(mask.sum())
        if valid is not None and valid < PACK_BELOW * mask.numel():
            h, flat, t = self.embed_valid(hist, hist_cat, target, target_cat, mask)
            out = h.new_zeros(mask.numel(), self.dim)
            out[flat] = h
            return out.view(*hist.shape, self.dim), t, mask
        ids = torch.cat([target.unsqueeze(1), hist], 1)
        cats = torch.cat([target_cat.unsqueeze(1), hist_cat], 1)
        e = torch.cat([self.embedding(ids), self.category(cats)], -1)
        return e[:, 1:], e[:, 0], mask

    def embed_valid(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor,
                    mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embed the target and the valid history positions only.

        Returns the valid positions' vectors ``(N, dim)``, sample by sample, their flat
        positions in ``(B * L)`` ``(N,)``, and the target ``(B, dim)``; for backbones that read
        the history position by position (DIN's jagged attention).
        """
        flat = mask.reshape(-1).nonzero().squeeze(1)
        ids = torch.cat([target, hist.reshape(-1).index_select(0, flat)])
        cats = torch.cat([target_cat, hist_cat.reshape(-1).index_select(0, flat)])
        e = torch.cat([self.embedding(ids), self.category(cats)], -1)
        return e[target.numel():], flat, e[: target.numel()]

    def forward(self, hist: Tensor, hist_cat: Tensor, target: Tensor, target_cat: Tensor) -> Tensor:
        """Return the logits ``(B,)`` of the samples."""
        return self.score(*self.embed(hist, hist_cat, target, target_cat))

    def score(self, hist: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """The logits ``(B,)`` from the history ``(B, L, dim)``, the target ``(B, dim)`` and the
        history's mask ``(B, L)`` (``False`` at padding)."""
        raise NotImplementedError
