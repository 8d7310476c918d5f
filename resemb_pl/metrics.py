"""CTR metrics: GAUC (DIN eq. 10), RelaImpr (DIN eq. 11) and the envelope radius (Theorem 1)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _tie_average_ranks(group: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """Sort by (group, score) and give each element its 1-based rank within its group, with
    ties averaged. Returns the sort order and the ranks in that order."""
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g, s = group[order], score[order]
    n = g.numel()
    pos = torch.arange(n, device=g.device, dtype=torch.float64)
    new_group = torch.ones(n, dtype=torch.bool, device=g.device)
    new_group[1:] = g[1:] != g[:-1]
    group_start = torch.cummax(torch.where(new_group, pos, torch.zeros_like(pos)), 0)[0]
    new_tie = new_group.clone()
    new_tie[1:] |= s[1:] != s[:-1]
    tie_id = torch.cumsum(new_tie.long(), 0) - 1
    tie_first = torch.zeros(int(tie_id[-1]) + 1 if n else 0, dtype=torch.float64, device=g.device)
    tie_last = torch.zeros_like(tie_first)
    tie_first.scatter_reduce_(0, tie_id, pos, "amin", include_self=False)
    tie_last.scatter_reduce_(0, tie_id, pos, "amax", include_self=False)
    rank = (tie_first[tie_id] + tie_last[tie_id]) / 2 - group_start + 1
    return order, rank


def group_auc(preds: Tensor, target: Tensor, groups: Tensor) -> Tensor:
    r"""GAUC of DIN eq. 10: per-user AUC weighted by the user's number of impressions.

    .. math::
        \mathrm{GAUC} = \frac{\sum_u n_u \, \mathrm{AUC}_u}{\sum_u n_u}

    Users whose samples all have one label are skipped. Ties count one half (rank-average AUC).
    Returns NaN when no user has both labels.
    """
    preds, target, groups = preds.flatten(), target.flatten().double(), groups.flatten().long()
    if preds.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    order, rank = _tie_average_ranks(groups, preds.double())
    g, y = groups[order], target[order]
    _, gid = torch.unique_consecutive(g, return_inverse=True)
    m = int(gid[-1]) + 1
    n = torch.zeros(m, dtype=torch.float64, device=preds.device).scatter_add_(0, gid, torch.ones_like(y))
    n_pos = torch.zeros_like(n).scatter_add_(0, gid, y)
    rank_pos = torch.zeros_like(n).scatter_add_(0, gid, rank * y)
    n_neg = n - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not bool(valid.any()):
        return torch.tensor(float("nan"), dtype=torch.float64)
    auc = (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)
    return (n[valid] * auc[valid]).sum() / n[valid].sum()


class GroupAUC(Metric):
    """GAUC as a torchmetrics metric; states are gathered across processes before computing.

    Call with ``update(preds, target, groups)`` (probabilities or logits: only order matters).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        self.preds.append(preds.detach().flatten())
        self.target.append(target.detach().flatten())
        self.groups.append(groups.detach().flatten())

    def compute(self) -> Tensor:
        return group_auc(
            dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups)
        ).float()


class LogLoss(Metric):
    """Mean binary cross-entropy of logits, summed across processes then divided."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.double(), target.double(), reduction="sum"
        )
        self.total += loss.detach()
        self.count += target.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


def rela_impr(auc_model: float, auc_base: float) -> float:
    """RelaImpr of DIN eq. 11, in percent: ``((auc_model - 0.5) / (auc_base - 0.5) - 1) * 100``."""
    return ((auc_model - 0.5) / (auc_base - 0.5) - 1.0) * 100.0


def envelope_radius(embeddings: Tensor, domains: Tensor) -> dict[str, float]:
    r"""Envelope radii of interest domains (res-embedding §3.1, Theorem 1).

    The radius of a set of vectors is the largest distance from their mean. For each domain
    ``z`` (items with ``domains == z``; ``z < 0`` is ignored) this gives :math:`R_z`.

    Returns:
        All NaN when no item has a domain. Otherwise ``r_max``: the largest domain radius; ``r_mean``: the mean domain radius;
        ``r_all``: the radius of all items together; ``r_ratio``: ``r_mean / r_all``, the
        scale-free tightness that Theorem 1 says res-embedding shrinks.
    """
    keep = domains >= 0
    x, z = embeddings[keep].double(), domains[keep].long()
    if z.numel() == 0:  # no item has a known domain (e.g. a data set without categories)
        return dict.fromkeys(("r_max", "r_mean", "r_all", "r_ratio"), float("nan"))
    _, z = torch.unique(z, return_inverse=True)
    k = int(z.max()) + 1
    count = torch.zeros(k, dtype=torch.float64, device=x.device).scatter_add_(
        0, z, torch.ones_like(z, dtype=torch.float64)
    )
    center = torch.zeros(k, x.size(1), dtype=torch.float64, device=x.device).index_add_(0, z, x)
    center /= count.unsqueeze(1)
    dist = (x - center[z]).norm(dim=1)
    radius = torch.zeros(k, dtype=torch.float64, device=x.device).scatter_reduce_(
        0, z, dist, "amax", include_self=False
    )
    r_all = float((x - x.mean(0)).norm(dim=1).max())
    r_mean = float(radius.mean())
    return {
        "r_max": float(radius.max()),
        "r_mean": r_mean,
        "r_all": r_all,
        "r_ratio": r_mean / r_all if r_all > 0 else float("nan"),
    }
