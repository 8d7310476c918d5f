"""CTRDataModule: interactions -> samples + interest graph, cached once, batched per step."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch_geometric.data import Data

from resemb_pl.atomic import atomic_open
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.interactions import Interactions, check_ids, drop_short_users
from resemb_pl.data.protocols import Samples, din_samples, movielens_samples
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1
Source = Literal["synthetic", "interactions", "amazon", "movielens", "requests"]


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
        hist = np.where(mask, s.seq[pos], 0)
        target = s.target[idx]
        return {
            "hist": torch.from_numpy(hist),
            "hist_cat": torch.from_numpy(self.item_category[hist]),
            "target": torch.from_numpy(target),
            "target_cat": torch.from_numpy(self.item_category[target]),
            "label": torch.from_numpy(s.label[idx]),
            "user": torch.from_numpy(s.user[idx]),
        }


def _collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


class CTRDataModule(LightningDataModule):
    """Interactions from a source, the DIN protocol, the interest graph, and loaders.

    Processing (reading, samples, graph) runs once and is cached in ``cache_dir`` under a key
    that hashes the inputs and every parameter; every process of a run reads the same cache.

    Args:
        source: ``synthetic`` (the interest-delay generator), ``interactions`` (a parquet or
            csv in the canonical schema), ``amazon`` (a McAuley reviews dump, with
            ``meta_path``), ``movielens`` (an official MovieLens folder) or ``requests``
            (scoring requests with original item ids, read with the vocabulary of
            ``checkpoint``; see :mod:`resemb_pl.data.requests`; for ``predict`` only).
        path: The file or folder of a non-synthetic source.
        meta_path: The Amazon ``meta_<Category>.json(.gz)`` (optional).
        on_bad_line: Amazon files: ``error`` stops at a malformed line, ``skip`` skips such
            lines and logs how many.
        preset: Synthetic preset: ``tiny``, ``small``, ``electronics`` or ``books``.
        protocol: ``din`` (next-item positives and sampled negatives, any data) or
            ``movielens`` (every rating is a sample, label ``rating > 3``; needs ratings and
            ``split="user"``).
        split: ``last`` (leave the last item of each user out) or ``user`` (split users).
        max_len: Longest history kept.
        window: Co-occurrence window of the interest graph (Algorithm 1's :math:`\\Delta`).
        top_k: Neighbours kept per item (Algorithm 1's :math:`K`).
        batch_size: Training batch size (paper: 128).
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: DataLoader workers.
        seed: Seed of generation, negative sampling and splits.
        cache_dir: Where processed data is cached; ``None`` disables the cache.
        download: Official archive to fetch when ``path`` does not exist yet: ``ml-100k``,
            ``ml-1m``, ``ml-20m`` (``path`` is then the folder to extract into) or
            ``amazon:Electronics`` / ``amazon:Books`` (``path`` and ``meta_path`` are the
            files to create).
        checkpoint: The checkpoint whose vocabulary reads ``requests`` (``resemb-pl predict``
            sets it from ``--ckpt_path``).
        output: Where ``resemb-pl predict`` writes the CTR probabilities (parquet).

    Example::

        dm = CTRDataModule(preset="tiny")
        dm.prepare_data(); dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
    """

    def __init__(
        self,
        source: Source = "synthetic",
        path: str | None = None,
        meta_path: str | None = None,
        on_bad_line: Literal["error", "skip"] = "error",
        preset: str = "small",
        protocol: Literal["din", "movielens"] = "din",
        split: Literal["last", "user"] = "last",
        max_len: int = 50,
        window: int = 2,
        top_k: int = 8,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = ".cache/resemb_pl",
        download: str | None = None,
        checkpoint: str | None = None,
        output: str = "predictions.parquet",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source != "synthetic" and path is None:
            raise ConfigError(f"data.path: required for source {source!r}")
        if protocol == "movielens" and split != "user":
            raise ConfigError("data.split: the MovieLens protocol splits users; set it to 'user'")
        for key, value in (("max_len", max_len), ("window", window), ("top_k", top_k),
                           ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {value}")
        self._arrays: dict[str, np.ndarray] | None = None

    # -- the processed data ------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        """Number of items ``H``; linked to ``model.num_items``."""
        return int(self.arrays["num_items"])

    @property
    def num_categories(self) -> int:
        """Number of categories ``C``; linked to ``model.num_categories``."""
        return int(self.arrays["num_categories"])

    @property
    def graph(self) -> Data | None:
        """The item interest graph from the training sequences (``None`` for requests)."""
        a = self.arrays
        if "edge_index" not in a:
            return None
        return Data(
            edge_index=torch.from_numpy(a["edge_index"]),
            edge_weight=torch.from_numpy(a["edge_weight"]),
            num_nodes=self.num_items + 1,
        )

    @property
    def item_category(self) -> np.ndarray:
        return self.arrays["item_category"]

    @property
    def item_domain(self) -> np.ndarray | None:
        """True interest domain per item (synthetic data) or ``None``."""
        return self.arrays.get("item_domain")

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = self._load_or_build()
        return self._arrays

    def samples(self, stage: Literal["train", "val", "test"]) -> Samples:
        return Samples.from_arrays(self.arrays, f"{stage}_")

    def prepare_data(self) -> None:
        self.arrays  # noqa: B018 - builds the cache once, before the processes split

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {
            name: SampleDataset(self.samples(name), self.item_category)
            for name in ("train", "val", "test", "predict")
            if f"{name}_target" in self.arrays
        }

    # -- loaders -----------------------------------------------------------------------------
    def _eval_loader(self, name: str) -> DataLoader:
        """An evaluation loader in sample order; each rank of a multi-process run gets a shard."""
        trainer, sampler = self.trainer, None
        if trainer is not None and trainer.world_size > 1:
            sampler = ShardSampler(self.datasets[name], trainer.world_size, trainer.global_rank)
        return DataLoader(
            self.datasets[name],
            batch_size=self.hparams.eval_batch_size,
            sampler=sampler,
            collate_fn=_collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer  # each rank of a multi-process run trains on its own shard
        return ResumableLoader(
            self.datasets["train"],
            batch_size=self.hparams.batch_size,
            seed=self.hparams.seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            collate_fn=_collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("predict" if "predict" in self.datasets else "test")

    # -- processing and cache ----------------------------------------------------------------
    def read_interactions(self) -> Interactions:
        """Read the source into the canonical table."""
        h = self.hparams
        if h.source == "synthetic":
            from resemb_pl.data.synthetic import generate

            return generate(h.preset, seed=h.seed)
        from resemb_pl.data.readers import read_source

        kwargs = {}
        if h.source == "amazon":
            kwargs = {"meta_path": h.meta_path, "on_bad_line": h.on_bad_line}
        return read_source(h.source, h.path, **kwargs)

    def _download(self) -> None:
        from resemb_pl.data import download

        h = self.hparams
        name = h.download
        if name.startswith("amazon:"):
            reviews, meta = download.fetch_amazon(name.split(":", 1)[1], Path(h.path).parent)
            for got, want in ((reviews, h.path), (meta, h.meta_path)):
                if want is not None and Path(got) != Path(want):
                    os.replace(got, want)
        elif name in download.MOVIELENS_VARIANTS:
            folder = download.fetch_movielens(name, Path(h.path).parent)
            if Path(folder) != Path(h.path):
                os.replace(folder, h.path)
        else:
            raise ConfigError(
                f"data.download: unknown archive {name!r}; choose from "
                f"{sorted(download.MOVIELENS_VARIANTS)} or amazon:<Category>"
            )

    def process(self) -> dict[str, np.ndarray]:
        """Interactions -> samples and graph, as a dict of arrays (the cache's content)."""
        h = self.hparams
        if h.source == "requests":
            from resemb_pl.data.requests import requests_arrays

            if h.checkpoint is None:
                raise ConfigError("data.checkpoint: required for source 'requests' "
                                  "(resemb-pl predict takes it from --ckpt_path)")
            return requests_arrays(h.path, h.checkpoint)
        data = self.read_interactions()
        check_ids(data)
        data, dropped = drop_short_users(data)
        if dropped:
            log.warning("%s: dropped %d user(s) with fewer than 2 events", data.source, dropped)
        if h.protocol == "movielens":
            splits = movielens_samples(data, max_len=h.max_len, seed=h.seed)
        else:
            splits = din_samples(data, max_len=h.max_len, split=h.split, seed=h.seed)
        if data.num_items < h.top_k:
            raise DataError(
                f"{data.source}: {data.num_items} items is fewer than data.top_k={h.top_k}"
            )
        graph = build_interest_graph(
            splits.graph_items, splits.graph_lengths, data.num_items, h.window, h.top_k
        )
        arrays = {
            "num_items": np.int64(data.num_items),
            "num_categories": np.int64(data.num_categories),
            "item_category": data.item_category(),
            "item_vocab": np.asarray(data.item_vocab).astype(str),
            "category_vocab": np.asarray(data.category_vocab).astype(str),
            "edge_index": graph.edge_index.numpy(),
            "edge_weight": graph.edge_weight.numpy(),
        }
        if data.item_domain is not None:
            arrays["item_domain"] = data.item_domain
        for name, samples in zip(("train", "val", "test"), splits, strict=True):
            arrays.update(samples.to_arrays(f"{name}_"))
        return arrays

    def fingerprint(self) -> str:
        """Hash of the inputs (file contents) and every processing parameter."""
        h = dict(self.hparams)
        params = {k: h[k] for k in ("source", "preset", "protocol", "split", "max_len", "window",
                                    "top_k", "seed", "on_bad_line")}
        params["version"] = CACHE_VERSION
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
        for p in (h["path"], h["meta_path"]):
            if p is not None:
                _hash_path(Path(p), digest)
        return digest.hexdigest()[:16]

    def _load_or_build(self) -> dict[str, np.ndarray]:
        h = self.hparams
        if h.download is not None and not Path(h.path).exists():
            self._download()
        if self.hparams.cache_dir is None or h.source == "requests":
            return self.process()
        key = self.fingerprint()
        root = Path(self.hparams.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        file = root / f"{self.hparams.source}-{key}.npz"
        with _file_lock(root / f".{key}.lock"):
            if file.exists():
                try:
                    arrays = _read_npz(file)
                    log.info("reusing processed data from %s", file)
                    return arrays
                except DataError as err:
                    log.warning("%s; rebuilding it", err)
            arrays = self.process()
            _write_npz_atomic(file, arrays)
            log.info("cached processed data in %s", file)
            return arrays


def _hash_path(path: Path, digest) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_npz_atomic(file: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(file) as fh:
        np.savez(fh, **arrays, cache_version=np.int64(CACHE_VERSION))


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
        raise DataError(f"cache {file} is unreadable ({type(err).__name__})") from err
    if int(arrays.get("cache_version", -1)) != CACHE_VERSION:
        raise DataError(f"cache {file} was written by another version")
    return arrays
