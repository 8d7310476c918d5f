"""CTRDataModule: interactions -> samples + interest graph, cached once, batched per step."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import inspect
import json
import logging
import os
import stat
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from filelock import FileLock
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch_geometric.data import Data

from resemb_pl.atomic import atomic_folder, sweep_abandoned
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.interactions import Interactions, check_ids, drop_short_users
from resemb_pl.data.protocols import Samples, din_samples, movielens_samples
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: a folder of .npy files (1 was one .npz)
Source = Literal["synthetic", "interactions", "impressions", "amazon", "movielens", "requests"]


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

    Processing (reading, samples, graph) runs once and is cached in ``cache_dir`` as a folder
    of ``.npy`` files, under a key that hashes every parameter and the input files (see
    :meth:`fingerprint`); every process of a run memory-maps the same files, so ``N``
    processes share one copy of the data.

    Args:
        source: ``synthetic`` (the interest-delay generator), ``interactions`` (a parquet or
            csv of positive events, by default in the canonical schema), ``impressions`` (an
            impression log with click labels: a parquet or csv file or a folder of parquet
            part files; see :mod:`resemb_pl.data.impressions`), ``amazon`` (a McAuley reviews
            dump, with ``meta_path``), ``movielens`` (an official MovieLens folder) or ``requests``
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
        split: ``last`` (leave the last item of each user out), ``user`` (split users) or
            ``time`` (by the impressions' times; ``impressions`` only, which takes ``time`` or
            ``user``).
        max_len: Longest history kept.
        window: Co-occurrence window of the interest graph (Algorithm 1's :math:`\\Delta`).
        top_k: Neighbours kept per item (Algorithm 1's :math:`K`).
        batch_size: Training batch size (paper: 128).
        eval_batch_size: Batch size of validation, test and prediction.
        num_workers: DataLoader workers.
        seed: Seed of generation, negative sampling and splits.
        cache_dir: Where processed data is cached; ``None`` disables the cache. A complete
            cache is read without write access to the folder.
        download: Official archive to fetch when ``path`` does not exist yet: ``ml-100k``,
            ``ml-1m``, ``ml-20m`` (``path`` is then the folder to extract into) or
            ``amazon:Electronics`` / ``amazon:Books`` (``path`` and ``meta_path`` are the
            files to create).
        checkpoint: The checkpoint whose vocabulary reads ``requests`` (``resemb-pl predict``
            sets it from ``--ckpt_path``).
        output: Where ``resemb-pl predict`` writes the CTR probabilities (parquet).
        columns: ``interactions`` and ``impressions``: our roles -> the file's column names,
            where they differ, e.g. ``{user_id: uid, item_id: adgroup_id, label: clk,
            timestamp: time_stamp, category_id: cate_id}`` (``label`` for impressions only).
        time_fractions: ``split: time``: the shares of impressions in training and validation;
            validation and test start at these quantiles of the times (test gets the rest).
        val_from: ``split: time``: where validation starts instead, a time in the log's unit
            or a date (``"2026-01-07"``); needs ``test_from``.
        test_from: ``split: time``: where test starts.
        sample_negatives: ``impressions``: add this many sampled negatives (items the user was
            never shown) per click, for logs that hold clicks only.

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
        split: Literal["last", "user", "time"] = "last",
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
        columns: dict[str, str] | None = None,
        time_fractions: tuple[float, float] = (0.8, 0.1),
        val_from: int | float | str | None = None,
        test_from: int | float | str | None = None,
        sample_negatives: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source != "synthetic" and path is None:
            raise ConfigError(f"data.path: required for source {source!r}")
        if protocol == "movielens" and split != "user":
            raise ConfigError("data.split: the MovieLens protocol splits users; set it to 'user'")
        _check_impression_options(source, split, columns, sample_negatives, val_from, test_from,
                                  time_fractions)
        for key, value in (("max_len", max_len), ("window", window), ("top_k", top_k),
                           ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {value}")
        for key, value in (("num_workers", num_workers), ("seed", seed)):
            if value < 0:
                raise ConfigError(f"data.{key}: must be >= 0, got {value}")
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
        """The item interest graph from the training sequences (``None`` for requests).

        Its tensors are copies: the cached arrays are read-only memory maps.
        """
        a = self.arrays
        if "edge_index" not in a:
            return None
        return Data(
            edge_index=torch.from_numpy(np.array(a["edge_index"])),
            edge_weight=torch.from_numpy(np.array(a["edge_weight"])),
            num_nodes=self.num_items + 1,
        )

    @property
    def item_category(self) -> np.ndarray:
        """Dense category of every dense item ``(H + 1,)``, a writable copy."""
        return np.array(self.arrays["item_category"])

    @property
    def item_domain(self) -> np.ndarray | None:
        """True interest domain per item (synthetic data) or ``None``; a writable copy."""
        domain = self.arrays.get("item_domain")
        return None if domain is None else np.array(domain)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The processed data: samples, graph, vocabularies, built or read from the cache once.

        From the cache, every array but the scalars is a read-only memory map of its file, so
        the processes of a run share one copy: copy what you change (``np.array(a)``), and copy
        before ``torch.from_numpy``, whose tensors would write into the map.
        """
        if self._arrays is None:
            self._arrays = self._load_or_build()
        return self._arrays

    def samples(self, stage: Literal["train", "val", "test"]) -> Samples:
        return Samples.from_arrays(self.arrays, f"{stage}_")

    def prepare_data(self) -> None:
        """Build the cache (Lightning runs this on the first process of each node only)."""
        self.arrays  # noqa: B018 - builds the cache once, before the processes split

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {
            name: SampleDataset(self.samples(name), self.item_category)
            for name in ("train", "val", "test", "predict")
            if f"{name}_target" in self.arrays
        }
        if stage == "fit" and "train" in self.datasets and not len(self.datasets["train"]):
            h = self.hparams  # else fit "succeeds" with exit code 0 and no checkpoint
            need = ("a user needs 4 or more events (split 'last' trains on those before the "
                    "last two)" if h.split == "last" and h.protocol == "din"
                    else "no user of the training split has 2 or more events")
            raise DataError(f"{h.path or h.preset}: no training samples; {need}")

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
        elif h.source == "interactions" and h.get("columns"):
            kwargs = {"columns": dict(h.columns)}
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
        if h.source == "impressions":
            from resemb_pl.data.impressions import impressions_arrays

            return impressions_arrays(
                h.path, columns=h.columns, max_len=h.max_len, split=h.split,
                time_fractions=tuple(h.time_fractions), val_from=h.val_from,
                test_from=h.test_from, sample_negatives=h.sample_negatives, window=h.window,
                top_k=h.top_k, seed=h.seed,
            )
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
        """The cache key: a hash of every processing parameter and of the input files.

        Files count by name, size and modification time and, when the inputs total less than
        :data:`CONTENT_HASH_LIMIT` bytes, by content too, so a small input edited in place is
        never served stale; larger inputs are not read. The key is ``<stat>`` (parameters,
        names, sizes, times) or ``<stat>-<content>``, 16 hex digits each.
        """
        stat_key, files = self._stat_key()
        return _content_key(stat_key, files)

    def _stat_key(self) -> tuple[str, list[tuple[str, Path, os.stat_result]]]:
        h = dict(self.hparams)
        params = {k: h.get(k) for k in _processing_parameters()}
        params["version"] = CACHE_VERSION
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
        files = self._inputs()
        for name, _, st in files:
            digest.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:16], files

    def _inputs(self) -> list[tuple[str, Path, os.stat_result]]:
        """``data.path`` and ``data.meta_path`` as regular files, checked before any is read."""
        h = self.hparams
        files = []
        for role in ("path", "meta_path"):
            if h.get(role) is not None:
                files += [(f"{role}:{name}", file, st)
                          for name, file, st in _input_files(Path(h[role]))]
        return files

    def _cache_folder(self, root: Path) -> Path:
        """The cache folder of these inputs and parameters.

        The first process of a node (the one that runs :meth:`prepare_data`) hashes the inputs;
        the others take the folder it made for the same parameters, names, sizes and times,
        without reading the inputs again (if there is exactly one; else they hash too).
        """
        source = self.hparams.source
        stat_key, files = self._stat_key()
        if _local_rank(self.trainer) > 0:
            made = [p for p in root.glob(f"{source}-{stat_key}*") if p.is_dir()]
            if len(made) == 1:
                return made[0]
        return root / f"{source}-{_content_key(stat_key, files)}"

    def _load_or_build(self) -> dict[str, np.ndarray]:
        h = self.hparams
        if h.download is not None and not Path(h.path).exists():
            self._download()
        if h.cache_dir is None or h.source == "requests":
            self._inputs()  # a FIFO or a device is refused before the reader blocks on it
            return self.process()
        root = Path(h.cache_dir)
        folder = self._cache_folder(root)
        if folder.is_dir():  # complete by construction: readable without the lock, read-only
            with contextlib.suppress(DataError):  # reported and rebuilt under the lock
                arrays = _read_cache(folder)
                log.info("reusing processed data from %s", folder)
                return arrays
        with _cache_lock(root, folder.name):
            sweep_abandoned(root)
            if folder.is_dir():
                try:
                    arrays = _read_cache(folder)
                    log.info("reusing processed data from %s", folder)
                    return arrays
                except DataError as err:
                    log.warning("%s; rebuilding it", err)
            _write_cache(folder, self.process())
            log.info("cached processed data in %s", folder)
        return _read_cache(folder)


def _check_impression_options(
    source, split, columns, sample_negatives, val_from, test_from, time_fractions
) -> None:
    """Refuse the options of impression logs where they mean nothing, naming the key."""
    if source == "impressions" and split not in ("time", "user"):
        raise ConfigError(f"data.split: an impression log splits by 'time' or 'user', got "
                          f"{split!r} (each user's last click is not a sample of its own)")
    if split == "time" and source != "impressions":
        raise ConfigError(f"data.split: 'time' is for source 'impressions', not {source!r}")
    if columns is not None and source not in ("interactions", "impressions"):
        raise ConfigError(f"data.columns: for sources 'interactions' and 'impressions', "
                          f"not {source!r}")
    if sample_negatives < 0:
        raise ConfigError(f"data.sample_negatives: must be >= 0, got {sample_negatives}")
    if sample_negatives and source != "impressions":
        raise ConfigError("data.sample_negatives: for source 'impressions'; the DIN protocol "
                          "samples one negative per positive already")
    for key, value in (("val_from", val_from), ("test_from", test_from)):
        if value is not None and split != "time":
            raise ConfigError(f"data.{key}: only with data.split 'time', not {split!r}")
    if source == "impressions":
        from resemb_pl.data.impressions import check_time_split, resolve_columns

        resolve_columns(columns)
        if split == "time":
            check_time_split(time_fractions, val_from, test_from)


# Parameters of CTRDataModule that do not change the processed arrays (the input files count
# through their names, sizes, times and contents instead of their paths).
_NOT_PROCESSING = frozenset({"self", "path", "meta_path", "batch_size", "eval_batch_size",
                             "num_workers", "cache_dir", "download", "checkpoint", "output"})
CONTENT_HASH_LIMIT = 64 << 20
"""Inputs smaller than this (bytes, all files together) are hashed by content for the key."""


def _processing_parameters() -> list[str]:
    """Every parameter of :class:`CTRDataModule` except those in ``_NOT_PROCESSING``.

    Taken from the signature, so a new data parameter is part of the cache key by default;
    a subclass's own parameters (applied after the cache) are not.
    """
    names = inspect.signature(CTRDataModule.__init__).parameters
    return [n for n in names if n not in _NOT_PROCESSING]


def _content_key(stat_key: str, files: list[tuple[str, Path, os.stat_result]]) -> str:
    if not files or sum(st.st_size for _, _, st in files) >= CONTENT_HASH_LIMIT:
        return stat_key
    digest = hashlib.sha256()
    for name, file, _ in files:
        digest.update(f"\0{name}\0".encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                digest.update(chunk)
    return f"{stat_key}-{digest.hexdigest()[:16]}"


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, st: os.stat_result) -> DataError:
    kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "a special file")
    return DataError(f"{path}: is {kind}, not a regular file or a folder of them")


def _input_files(path: Path) -> list[tuple[str, Path, os.stat_result]]:
    """The regular files of ``path`` (a file, or a folder of them), by name; nothing is read.

    Raises:
        DataError: ``path`` is missing, or it or a file in it is a FIFO, a device or a socket.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory") from None
    if stat.S_ISREG(st.st_mode):
        return [(path.name, path, st)]
    if not stat.S_ISDIR(st.st_mode):
        raise _not_regular(path, st)
    files = []
    for folder, dirs, names in os.walk(path, onerror=_raise):
        dirs.sort()
        for name in sorted(names):
            file = Path(folder, name)
            try:
                st = os.stat(file)
            except FileNotFoundError:
                raise DataError(f"{file}: no such file (a broken link?)") from None
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(file, st)
            files.append((file.relative_to(path).as_posix(), file, st))
    return files


def _raise(err: OSError) -> None:
    raise err


def _local_rank(trainer) -> int:
    """This process's rank on its node: the trainer's, else the launcher's (torchrun, SLURM)."""
    if trainer is not None:
        return trainer.local_rank
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


@contextlib.contextmanager
def _cache_lock(root: Path, name: str):
    """Hold the lock of cache ``name`` in ``root``; a read-only ``root`` is one ConfigError."""
    lock = FileLock(root / f".{name}.lock")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ConfigError(
            f"data.cache_dir: {root} holds no complete cache for these data and is not "
            f"writable ({err.strerror}); point it at a writable folder, or set it to null"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _write_cache(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as one ``.npy`` per array plus ``meta.json``, as a whole folder.

    Strings are stored as fixed-width unicode arrays, loadable without pickle. An array that
    several names share (the splits' common ``seq``) is stored once.
    """
    with atomic_folder(folder) as tmp:
        meta, files = {"version": CACHE_VERSION, "arrays": {}}, {}
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype == object:
                array = array.astype(str)
            if id(value) not in files:
                files[id(value)] = f"{name}.npy"
                np.save(tmp / files[id(value)], array, allow_pickle=False)
            meta["arrays"][name] = {"file": files[id(value)], "dtype": array.dtype.str,
                                    "shape": list(array.shape)}
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh)


def _read_cache(folder: Path) -> dict[str, np.ndarray]:
    """Open a cache folder: scalars in memory, every other array memory-mapped read-only.

    Every process maps the same pages, and data larger than memory is paged in as it is read
    (read-only maps are not charged to the memory commit limit, copy-on-write ones would be).
    A numpy write into them raises ``ValueError: assignment destination is read-only``.

    Raises:
        DataError: A file is missing, truncated or not what ``meta.json`` lists, or the cache
            was written by another version.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            raise DataError(f"cache {folder} was written by another version")
        arrays, opened = {}, {}
        for name, info in meta["arrays"].items():
            file = info["file"]
            if file not in opened:
                mode = "r" if info["shape"] else None
                opened[file] = np.load(folder / file, mmap_mode=mode, allow_pickle=False)
            array = opened[file]
            if array.dtype.str != info["dtype"] or list(array.shape) != info["shape"]:
                raise ValueError(f"{file} is not the array meta.json lists")
            arrays[name] = array
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
        raise DataError(f"cache {folder} is unreadable ({type(err).__name__})") from err
    return arrays
