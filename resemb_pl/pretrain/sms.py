"""+sms: a siamese auxiliary network that pretrains the item embedding (paper, Table 3, [15]).

The paper describes [15] only as using "an additional network and context information of the
data to pre-train embedding vectors". This is that reading, stated in full: one tower, shared by
both sides of a pair (siamese), maps an item's embedding together with its context (its
category's embedding) through an MLP; the network learns to tell item pairs that co-occur within
``window`` in a training behaviour sequence from pairs with a random negative item. The item
embedding table at the tower's input initialises the CTR model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from resemb_pl.nn.layers import MLP
from resemb_pl.pretrain.sgns import negative_sampling_loss, pretrain_table
from resemb_pl.pretrain.skipgram import context_pairs


class SiameseNetwork(nn.Module):
    r"""Siamese towers over ``[item embedding, category embedding]``; pairs score by dot product.

    .. math::
        s(a, b) = f([\mathbf{e}_a, \mathbf{c}_{k(a)}])^\top f([\mathbf{e}_b, \mathbf{c}_{k(b)}])

    Args:
        item_category: Category of every item, ``(num_items + 1,)``.
        embedding_dim: Size of the item (and category) embedding.
        hidden: Hidden widths of the tower; its output has ``embedding_dim`` units.
    """

    def __init__(
        self, item_category: Tensor, embedding_dim: int, hidden: Sequence[int] = (64,)
    ) -> None:
        super().__init__()
        num_items, num_categories = item_category.numel() - 1, int(item_category.max())
        self.register_buffer("item_category", item_category.long())
        self.item = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        self.category = nn.Embedding(num_categories + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.category.weight, std=0.05)
        self.tower = MLP(2 * embedding_dim, hidden, embedding_dim, "relu")

    def encode(self, items: Tensor) -> Tensor:
        """The tower's output for ``items`` (any shape)."""
        category = self.category(self.item_category[items])
        return self.tower(torch.cat([self.item(items), category], -1))

    def forward(self, center: Tensor, context: Tensor, negatives: Tensor) -> Tensor:
        """Logistic loss of the co-occurring pairs against the negatives."""
        return negative_sampling_loss(self.encode(center), self.encode(context),
                                      self.encode(negatives))

    def table(self) -> Tensor:
        """The item embedding at the towers' input, row 0 zero."""
        return self.item.weight.detach()


def pretrain_sms(
    samples,
    item_category: np.ndarray,
    embedding_dim: int = 18,
    *,
    hidden: Sequence[int] = (64,),
    window: int = 2,
    epochs: int = 5,
    batch_size: int = 1024,
    lr: float = 0.01,
    num_negatives: int = 5,
    seed: int = 0,
) -> tuple[Tensor, list[float]]:
    """Train the siamese network on the training sequences; return the item table and losses."""
    category = torch.from_numpy(np.asarray(item_category))
    return pretrain_table(lambda: SiameseNetwork(category, embedding_dim, hidden),
                          context_pairs(samples, window), len(item_category) - 1, seed=seed,
                          epochs=epochs, batch_size=batch_size, lr=lr,
                          num_negatives=num_negatives)
