"""Batching: the samples as a dataset, and the samplers and loader that resume mid-epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from resemb_pl.data.protocols import Samples


class SampleDataset(Dataset):
    """Samples as a map-style dataset whose batches are gathered in one vectorised call.

    ``__getitems__`` pads each batch to the longest history *in that batch*.
    """

    def __init__(self, samples: Samples, item_category: np.ndarray) -> None:
        self.samples = samples
        self.item_category = item_category

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        s, idx = self.samples, np.asarray(indices, dtype=np.int64)
        length = s.hist_len[idx]
        width = max(1, int(length.max()) if len(idx) else 1)
        offset = np.arange(width)
        mask = offset[None, :] < length[:, None]
        pos = np.where(mask, s.hist_start[idx, None] + offset[None, :], 0)
        seq = s.seq if len(s.seq) else np.zeros(1, dtype=np.int64)  # every history empty
        hist = np.where(mask, seq[pos], 0)
        target = s.target[idx]
        return {
            "hist": torch.from_numpy(hist),
            "hist_cat": torch.from_numpy(self.item_category[hist]),
            "target": torch.from_numpy(target),
            "target_cat": torch.from_numpy(self.item_category[target]),
            "label": torch.from_numpy(s.label[idx]),
            "user": torch.from_numpy(s.user[idx]),
        }


def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


class EpochSampler(DistributedSampler):
    """A random permutation that depends only on ``(seed, epoch)``, optionally started late.

    Lightning calls :meth:`set_epoch` before each epoch, so a resumed run draws the same order
    as an uninterrupted one, whatever the global random state. With ``num_replicas > 1`` rank
    ``r`` takes every ``num_replicas``-th sample of the permutation from ``r`` on, the
    permutation padded by its own start so every rank has as many batches (as
    :class:`~torch.utils.data.DistributedSampler`); being one, Lightning keeps it as it is.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, seed=seed)
        self.size, self.start = size, 0

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        if self.num_replicas > 1:
            order = np.resize(order, self.total_size)[self.rank :: self.num_replicas]
        start, self.start = self.start, 0
        yield from order[start:].tolist()

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``n`` gets samples ``r, r + n, r + 2n, ...``: each sample exactly once.

    Unlike :class:`~torch.utils.data.DistributedSampler` it pads no shard with duplicates, so
    metrics whose states are gathered across ranks (AUC, GAUC, logloss) cover the evaluation set
    exactly. Lightning keeps a loader's ``DistributedSampler`` as it is.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.total_size, self.num_replicas))


class ResumableLoader(DataLoader):
    """A shuffling loader that Lightning checkpoints mid-epoch and resumes at the next batch.

    Its ``state_dict`` (saved by Lightning's fit loop) is the epoch and the number of batches
    handed out in it; after ``load_state_dict`` the next iteration of that epoch skips them.
    Sized loaders are not prefetched by Lightning, so the count handed out is the count trained.
    """

    def __init__(
        self, dataset: Dataset, *, batch_size: int, seed: int, num_replicas: int = 1,
        rank: int = 0, **kwargs
    ) -> None:
        sampler = EpochSampler(len(dataset), seed, num_replicas, rank)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self._batches, self._resume = 0, (-1, 0)

    def __iter__(self):
        epoch, done = self._resume
        self._resume = (-1, 0)
        self._batches = done if epoch == self.sampler.epoch else 0
        self.sampler.start = self._batches * self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))
