"""Training on a fraction of the users (Fig. 6): :class:`SubsetDataModule`."""

from __future__ import annotations

import numpy as np
from torch_geometric.data import Data

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.protocols import Samples
from resemb_pl.errors import ConfigError


def graph_from_samples(samples: Samples, num_items: int, window: int, top_k: int) -> Data:
    """Rebuild the interest graph from the training sequences that ``samples`` were cut from.

    A user's graph sequence is the span of ``samples.seq`` from their earliest history start to
    their latest history end, plus the slot after it when that is a positive target. Under the
    DIN protocol (both splits) this is exactly the span the data module builds the graph from.
    Under the MovieLens protocol it is too, except that a user's last event rated exactly at
    the like threshold (liked, yet a negative) is left out.
    """
    if not len(samples):
        return build_interest_graph([], [], num_items, window, top_k)
    end = samples.hist_start + samples.hist_len
    order = np.argsort(samples.user, kind="stable")
    users = samples.user[order]
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    group = np.cumsum(np.r_[True, users[1:] != users[:-1]]) - 1
    lo = np.minimum.reduceat(samples.hist_start[order], first)
    hi = np.maximum.reduceat(end[order], first)
    positive_at_end = (samples.label[order] > 0.5) & (end[order] == hi[group])
    hi = hi + np.bincount(group, weights=positive_at_end, minlength=len(first)).clip(max=1)
    hi = hi.astype(np.int64)
    index = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
    return build_interest_graph(samples.seq[index], hi - lo, num_items, window, top_k)


class SubsetDataModule(CTRDataModule):
    """A :class:`CTRDataModule` that trains on a random fraction of the training users.

    The kept users are drawn with ``fraction_seed``; their training samples are kept whole, and
    the interest graph is rebuilt from their sequences only, so a res-embedding sees no more
    data than the plain embedding. Validation and test samples are untouched.

    Args:
        train_user_fraction: Fraction of training users kept, in ``(0, 1]``.
        fraction_seed: Seed of the draw of users.
        **kwargs: Arguments of :class:`CTRDataModule`.
    """

    def __init__(self, train_user_fraction: float = 1.0, fraction_seed: int = 0, **kwargs) -> None:
        if not 0 < train_user_fraction <= 1:
            raise ConfigError(f"train_user_fraction: must lie in (0, 1], got {train_user_fraction}")
        super().__init__(**kwargs)
        self.train_user_fraction, self.fraction_seed = train_user_fraction, fraction_seed
        self._train: Samples | None = None
        self._graph: Data | None = None

    def samples(self, stage: str) -> Samples:
        if stage != "train" or self.train_user_fraction >= 1:
            return super().samples(stage)
        if self._train is None:
            train = super().samples("train")
            users = np.unique(train.user)
            rng = np.random.default_rng(self.fraction_seed)
            n = max(1, int(round(self.train_user_fraction * len(users))))
            kept = rng.choice(users, size=n, replace=False)
            self._train = train.subset(np.flatnonzero(np.isin(train.user, kept)))
        return self._train

    @property
    def graph(self) -> Data:
        if self.train_user_fraction >= 1:
            return super().graph
        if self._graph is None:
            h = self.hparams
            self._graph = graph_from_samples(self.samples("train"), self.num_items, h.window,
                                             h.top_k)
        return self._graph


