"""Skip-gram with negative sampling (Mikolov et al., 2013) on item pairs: the shared trainer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resemb_pl.errors import DataError


def negative_distribution(pairs: np.ndarray, num_items: int, power: float = 0.75) -> Tensor:
    """Sampling weights of negatives: item frequency in ``pairs`` to the power ``power``."""
    counts = np.bincount(pairs[:, 1], minlength=num_items + 1).astype(np.float64) ** power
    counts[0] = 0.0
    if counts.sum() == 0:
        counts[1:] = 1.0
    return torch.from_numpy(counts / counts.sum()).float()


def negative_sampling_loss(anchor: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
    """Logistic loss of anchors ``(B, D)`` against their positives ``(B, D)`` and negatives.

    Args:
        anchor: One vector per pair.
        positive: The vector that each anchor should score high with.
        negatives: ``(B, K, D)``: ``K`` vectors that each anchor should score low with.

    Returns:
        ``-(mean log σ(<a, p>) + mean Σ_k log σ(-<a, n_k>))``.
    """
    pos = (anchor * positive).sum(-1)
    neg = torch.einsum("bd,bkd->bk", anchor, negatives)
    return -(F.logsigmoid(pos).mean() + F.logsigmoid(-neg).sum(-1).mean())


class SkipGram(nn.Module):
    """Two tables, centre and context; a pair scores ``<centre_i, context_j>``.

    Args:
        num_items: Number of items ``H`` (row 0 is padding).
        embedding_dim: Size of each vector.
    """

    def __init__(self, num_items: int, embedding_dim: int) -> None:
        super().__init__()
        self.center = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        self.context = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        nn.init.uniform_(self.center.weight, -0.5 / embedding_dim, 0.5 / embedding_dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, center: Tensor, context: Tensor, negatives: Tensor) -> Tensor:
        """The negative-sampling loss of the pairs ``(center, context)`` and ``negatives``."""
        return negative_sampling_loss(self.center(center), self.context(context),
                                      self.context(negatives))

    def table(self) -> Tensor:
        """The item vectors (the centre table), row 0 zero."""
        return self.center.weight.detach()


def train_pairs(
    model: nn.Module,
    pairs: np.ndarray,
    num_items: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    num_negatives: int,
    seed: int,
) -> list[float]:
    """Fit ``model(center, context, negatives) -> loss`` on ``pairs``; return the epoch losses.

    Args:
        model: A module whose forward returns the loss of a batch of pairs and negatives.
        pairs: ``(N, 2)`` item ids ``(center, context)``, both ``>= 1``.
        num_items: Number of items ``H``.
        epochs: Passes over the pairs.
        batch_size: Pairs per step.
        lr: Adam learning rate.
        num_negatives: Negatives per pair, drawn from the unigram^0.75 distribution.
        seed: Seed of shuffling and negative sampling.
    """
    if len(pairs) == 0:
        raise DataError("no training pairs: the sequences are too short for the window")
    generator = torch.Generator().manual_seed(seed)
    noise = negative_distribution(pairs, num_items)
    data = torch.from_numpy(pairs.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            negatives = torch.multinomial(
                noise, batch.size(0) * num_negatives, replacement=True, generator=generator
            ).view(-1, num_negatives)
            loss = model(batch[:, 0], batch[:, 1], negatives)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.size(0)
        losses.append(total / len(data))
    return losses


def pretrain_table(
    build: Callable[[], nn.Module], pairs: np.ndarray, num_items: int, *, seed: int, **training
) -> tuple[Tensor, list[float]]:
    """Seed torch, build a model with a ``table()``, fit it on ``pairs``; the table and losses.

    Args:
        build: Makes the model (after ``torch.manual_seed(seed)``, so its initialisation is
            seeded).
        pairs: ``(N, 2)`` item ids ``(center, context)``.
        num_items: Number of items ``H``.
        seed: Seed of the initialisation, the shuffling and the negative sampling.
        **training: ``epochs``, ``batch_size``, ``lr``, ``num_negatives`` of :func:`train_pairs`.

    Returns:
        The model's item table and the epoch losses.
    """
    torch.manual_seed(seed)
    model = build()
    losses = train_pairs(model, pairs, num_items, seed=seed, **training)
    return model.table(), losses


def window_pairs(walks: np.ndarray, window: int) -> np.ndarray:
    """Every ordered pair of items at most ``window`` apart in a row of ``walks``.

    Entries ``<= 0`` (padding, ended walks) are skipped. Returns ``(N, 2)`` int64.
    """
    out = []
    for d in range(1, window + 1):
        if walks.shape[1] <= d:
            break
        a, b = walks[:, :-d].reshape(-1), walks[:, d:].reshape(-1)
        keep = (a > 0) & (b > 0)
        out += [np.stack([a[keep], b[keep]], 1), np.stack([b[keep], a[keep]], 1)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)
