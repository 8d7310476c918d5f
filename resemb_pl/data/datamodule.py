"""CTRDataModule: a source -> :class:`~resemb_pl.data.product.ProcessedData`, cached, batched."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from resemb_pl.atomic import sweep_abandoned
from resemb_pl.data import cache, sources
from resemb_pl.data.cache import CACHE_VERSION, CONTENT_HASH_LIMIT
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.loaders import (
    EpochSampler,
    ResumableLoader,
    SampleDataset,
    ShardSampler,
    collate,
)
from resemb_pl.data.product import ProcessedData
from resemb_pl.data.protocols import Samples
from resemb_pl.data.sources import check_source
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["CACHE_VERSION", "CONTENT_HASH_LIMIT", "CTRDataModule", "EpochSampler",
           "ResumableLoader", "SampleDataset", "ShardSampler"]


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
            dump, with ``meta_path``), ``movielens`` (an official MovieLens folder),
            ``requests`` (scoring requests with original item ids, read with the catalogue of
            the scoring checkpoint, handed over by :meth:`use_catalogue`; see
            :mod:`resemb_pl.data.requests`; for ``predict`` only), or a name registered with
            :func:`~resemb_pl.data.sources.register_source`.
        path: The file or folder of a non-synthetic source.
        meta_path: The Amazon ``meta_<Category>.json(.gz)``, or for ``interactions`` an item
            table (parquet or csv) whose categories replace the events' (optional).
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
        download: Archive to fetch when ``path`` is missing: ``ml-100k``, ``ml-1m``,
            ``ml-20m`` (into the folder ``path``) or ``amazon:Electronics`` / ``amazon:Books``
            (the files ``path``, ``meta_path``).
        output: Where ``resemb-pl predict`` writes the CTR probabilities (parquet).
        columns: ``interactions``, ``impressions``: our roles -> the file's column names,
            e.g. ``{user_id: uid, item_id: adgroup_id, label: clk}`` (label: impressions).
        time_fractions: ``split: time``: the shares of impressions in training and validation;
            validation and test start at these quantiles of the times (test gets the rest).
        val_from: ``split: time``: where validation starts instead, a time in the log's unit
            or a date (``"2026-01-07"``); needs ``test_from``.
        test_from: ``split: time``: where test starts.
        sample_negatives: ``impressions``: add this many sampled negatives (items the user was
            never shown) per click, for logs that hold clicks only.
        train_on_val: ``split: last``: train on the validation pairs too (as DIN's code).

    Example::

        dm = CTRDataModule(preset="tiny")
        dm.prepare_data(); dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
    """

    def __init__(
        self,
        source: str = "synthetic",
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
        output: str = "predictions.parquet",
        columns: dict[str, str] | None = None,
        time_fractions: tuple[float, float] = (0.8, 0.1),
        val_from: int | float | str | None = None,
        test_from: int | float | str | None = None,
        sample_negatives: int = 0,
        train_on_val: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_source(source)
        if source != "synthetic" and path is None:
            raise ConfigError(f"data.path: required for source {source!r}")
        if protocol == "movielens" and split != "user":
            raise ConfigError("data.split: the MovieLens protocol splits users; set it to 'user'")
        _check_impression_options(source, split, columns, sample_negatives, val_from, test_from,
                                  time_fractions)
        if train_on_val and (split != "last" or protocol != "din" or source == "impressions"):
            raise ConfigError(f"data.train_on_val: only with data.split 'last' of the DIN "
                              f"protocol, not split {split!r}, protocol {protocol!r}, source "
                              f"{source!r}")
        for key, value in (("max_len", max_len), ("window", window), ("top_k", top_k),
                           ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {value}")
        for key, value in (("num_workers", num_workers), ("seed", seed)):
            if value < 0:
                raise ConfigError(f"data.{key}: must be >= 0, got {value}")
        self._data: ProcessedData | None = None
        self._catalogue: Catalogue | None = None  # of the model that scores requests

    # -- the processed data ------------------------------------------------------------------
    @property
    def processed(self) -> ProcessedData:
        """The processed data (samples, graph, catalogue), built or read from the cache once.

        From the cache, every array is a read-only memory map of its file, so the processes of
        a run share one copy: copy what you change (``np.array(a)``), and copy before
        ``torch.from_numpy``, whose tensors would write into the map.
        """
        if self._data is None:
            self._data = self._load_or_build()
        return self._data

    @property
    def catalogue(self) -> Catalogue:
        """Counts, item -> category, original ids and domains of the data."""
        return self.processed.catalogue

    @property
    def num_items(self) -> int:
        """Number of items ``H``; linked to ``model.num_items``."""
        return self.catalogue.num_items

    @property
    def num_categories(self) -> int:
        """Number of categories ``C``; linked to ``model.num_categories``."""
        return self.catalogue.num_categories

    @property
    def graph(self) -> Data | None:
        """The item interest graph from the training sequences (``None`` for requests).

        Its tensors are copies: the cached arrays are read-only memory maps.
        """
        return self.processed.graph

    @property
    def item_category(self) -> np.ndarray:
        """Dense category of every dense item ``(H + 1,)``, a writable copy."""
        return np.array(self.catalogue.item_category)

    @property
    def item_domain(self) -> np.ndarray | None:
        """True interest domain per item (synthetic data) or ``None``; a writable copy."""
        domain = self.catalogue.item_domain
        return None if domain is None else np.array(domain)

    def samples(self, stage: Literal["train", "val", "test", "predict"]) -> Samples:
        """The samples of ``stage``."""
        samples = getattr(self.processed, stage)
        if samples is None:
            raise DataError(f"{self.hparams.path or self.hparams.preset}: no {stage} samples "
                            f"(source {self.hparams.source!r})")
        return samples

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Read ``requests`` with ``catalogue``: the model's ids, categories and history length.

        ``resemb-pl predict`` hands over the catalogue of ``--ckpt_path``
        (:meth:`Catalogue.from_checkpoint`) before the data is read.
        """
        self._catalogue, self._data = catalogue, None

    def restrict_training_users(self, fraction: float, seed: int) -> None:
        """Train on a random ``fraction`` of the training users, with the graph of their data.

        See :meth:`ProcessedData.restrict_training_users`; call it before the run starts.
        """
        self._data = self.processed.restrict_training_users(fraction, seed)

    def prepare_data(self) -> None:
        """Build the cache (Lightning runs this on the first process of each node only)."""
        self.processed  # noqa: B018 - builds the cache once, before the processes split

    def setup(self, stage: str | None = None) -> None:
        item_category = self.item_category
        self.datasets = {name: SampleDataset(samples, item_category)
                         for name, samples in self.processed.splits().items()}
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
            collate_fn=collate,
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
            collate_fn=collate,
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
    def fingerprint(self) -> str:
        """The cache key: a hash of every processing parameter and of the input files.

        Files count by name, size and modification time and, when the inputs total less than
        :data:`CONTENT_HASH_LIMIT` bytes, by content too, so a small input edited in place is
        never served stale; larger inputs are not read. The key is ``<stat>`` (parameters,
        names, sizes, times) or ``<stat>-<content>``, 16 hex digits each.
        """
        stat_key, files = self._stat_key()
        return cache.content_key(stat_key, files)

    def _stat_key(self) -> tuple[str, list[tuple[str, Path, os.stat_result]]]:
        h = dict(self.hparams)
        params = {k: h.get(k) for k in _processing_parameters()}
        params["version"] = cache.CACHE_VERSION
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
                          for name, file, st in cache.input_files(Path(h[role]))]
        return files

    def _cache_folder(self, root: Path) -> Path:
        """The cache folder of these inputs and parameters.

        The first process of a node (the one that runs :meth:`prepare_data`) hashes the inputs;
        the others take the folder it made for the same parameters, names, sizes and times,
        without reading the inputs again (if there is exactly one; else they hash too).
        """
        source = self.hparams.source
        stat_key, files = self._stat_key()
        if cache.local_rank(self.trainer) > 0:
            made = [p for p in root.glob(f"{source}-{stat_key}*") if p.is_dir()]
            if len(made) == 1:
                return made[0]
        return root / f"{source}-{cache.content_key(stat_key, files)}"

    def process(self) -> ProcessedData:
        """The source -> samples, graph, catalogue (:func:`resemb_pl.data.sources.process`)."""
        return sources.process(dict(self.hparams), self._catalogue)

    def _load_or_build(self) -> ProcessedData:
        h = self.hparams
        if h.download is not None and not Path(h.path).exists():
            sources.download(dict(h))
        if h.cache_dir is None or h.source == "requests":
            self._inputs()  # a FIFO or a device is refused before the reader blocks on it
            return self.process()
        root = Path(h.cache_dir)
        folder = self._cache_folder(root)
        if folder.is_dir():  # complete by construction: readable without the lock, read-only
            with contextlib.suppress(DataError):  # reported and rebuilt under the lock
                return self._read(folder)
        with cache.cache_lock(root, folder.name):
            sweep_abandoned(root)
            if folder.is_dir():
                try:
                    return self._read(folder)
                except DataError as err:
                    log.warning("%s; rebuilding it", err)
            cache.write_cache(folder, self.process().to_arrays())
            log.info("cached processed data in %s", folder)
        return ProcessedData.from_arrays(cache.read_cache(folder))

    @staticmethod
    def _read(folder: Path) -> ProcessedData:
        arrays = cache.read_cache(folder)
        try:
            data = ProcessedData.from_arrays(arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"cache {folder} is unreadable ({type(err).__name__})") from err
        log.info("reusing processed data from %s", folder)
        return data


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
                             "num_workers", "cache_dir", "download", "output"})


def _processing_parameters() -> list[str]:
    """Every parameter of :class:`CTRDataModule` except those in ``_NOT_PROCESSING``.

    Taken from the signature, so a new data parameter is part of the cache key by default;
    a subclass's own parameters (applied after the cache) are not.
    """
    names = inspect.signature(CTRDataModule.__init__).parameters
    return [n for n in names if n not in _NOT_PROCESSING]

