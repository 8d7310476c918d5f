"""An exact t-SNE and the k-nearest-neighbour label purity of an embedding (Fig. 7)."""

from __future__ import annotations

import math

import numpy as np
import torch

from resemb_pl.errors import ConfigError


# -- t-SNE ----------------------------------------------------------------------------------
def tsne(
    x: np.ndarray,
    perplexity: float = 30.0,
    iterations: int = 1000,
    seed: int = 0,
    learning_rate: float | None = None,
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) to two dimensions.

    For up to a few thousand points: Gaussian affinities calibrated to ``perplexity`` by
    bisection, early exaggeration
    (12 for the first 250 iterations), momentum 0.5 then 0.8, and per-coordinate gains. The
    learning rate defaults to ``max(n / 48, 50)``, scikit-learn's ``"auto"``.

    Returns:
        ``(n, 2)`` coordinates.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = x.size(0)
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    learning_rate = learning_rate or max(n / 48, 50.0)
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    # Bisection on the precision beta of each row so that the row's entropy is log(perplexity).
    target = math.log(perplexity)
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), float("inf"), dtype=torch.float64)
    beta = torch.ones(n, dtype=torch.float64)
    scale = d2[torch.isfinite(d2)].median().clamp(min=1e-12)
    for _ in range(64):
        logits = -d2 / scale * beta[:, None]
        p = torch.softmax(logits, 1)
        entropy = -(p * torch.log(p.clamp(min=1e-300))).sum(1)
        high = entropy > target  # too flat: raise beta
        lo = torch.where(high, beta, lo)
        hi = torch.where(high, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    p = ((p + p.T) / (2 * n)).clamp(min=1e-12).float()
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 2, generator=gen) * 1e-4
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    for it in range(iterations):
        exaggeration = 12.0 if it < 250 else 1.0
        momentum = 0.5 if it < 250 else 0.8
        sq = y.pow(2).sum(1)
        num = 1.0 / (1.0 + (sq[:, None] + sq[None, :] - 2 * y @ y.T).clamp(min=0))
        num.fill_diagonal_(0.0)
        q = (num / num.sum()).clamp(min=1e-12)
        w = (exaggeration * p - q) * num
        grad = 4 * (w.sum(1, keepdim=True) * y - w @ y)
        same = (grad > 0) == (velocity > 0)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp(min=0.01)
        velocity = momentum * velocity - learning_rate * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y.double().numpy()


def knn_purity(x: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours (Euclidean) that share its label."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    d = torch.cdist(t, t)
    d.fill_diagonal_(float("inf"))
    k = min(k, len(t) - 1)
    nn_idx = d.topk(k, largest=False).indices.numpy()
    labels = np.asarray(labels)
    return float((labels[nn_idx] == labels[:, None]).mean())
