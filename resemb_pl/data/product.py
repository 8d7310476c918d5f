"""The processed data: one typed object from data preparation to the model.

:class:`ProcessedData` is what every source is turned into and what the cache holds: the
:class:`~resemb_pl.data.catalogue.Catalogue`, the sample splits, the item interest graph and
the per-user training sequences it was built from (so that a subset of the users gets the
graph of exactly its own sequences, :meth:`ProcessedData.restrict_training_users`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch_geometric.data import Data

from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.protocols import Samples, SampleSplits
from resemb_pl.errors import ConfigError

STAGES = ("train", "val", "test", "predict")


@dataclass(frozen=True)
class GraphSequences:
    """The training sequences an interest graph is built from, one per user.

    Args:
        items: Every sequence's items, concatenated.
        lengths: Length of each sequence.
        users: Dense user of each sequence.
    """

    items: np.ndarray
    lengths: np.ndarray
    users: np.ndarray

    def of_users(self, users: np.ndarray) -> GraphSequences:
        """The sequences of ``users`` only, in the same order."""
        keep = np.isin(self.users, users)
        return GraphSequences(self.items[np.repeat(keep, self.lengths)], self.lengths[keep],
                              self.users[keep])


@dataclass(frozen=True)
class ProcessedData:
    """Samples, interest graph and catalogue of one data set, as the model consumes them.

    Built once per data set (by :class:`~resemb_pl.data.datamodule.CTRDataModule`, from any
    source) and cached as flat arrays (:meth:`to_arrays`); from the cache, the arrays are
    read-only memory maps, so copy what you change.

    Args:
        catalogue: Counts, item -> category, original ids, domains.
        train: Training samples (``None`` for requests).
        val: Validation samples.
        test: Test samples.
        predict: Samples to score (requests only).
        edge_index: The interest graph's edges ``(2, |E|)``, ``[0]`` the neighbour.
        edge_weight: Their co-occurrence counts ``(|E|,)``.
        sequences: The training sequences the graph was built from.
        window: Co-occurrence window the graph was built with.
        top_k: Neighbours kept per item.

    Example::

        data = ProcessedData.from_splits(catalogue, din_samples(interactions), window=2, top_k=8)
        half = data.restrict_training_users(0.5, seed=0)
    """

    catalogue: Catalogue
    train: Samples | None = None
    val: Samples | None = None
    test: Samples | None = None
    predict: Samples | None = None
    edge_index: np.ndarray | None = None
    edge_weight: np.ndarray | None = None
    sequences: GraphSequences | None = None
    window: int = 2
    top_k: int = 8

    @classmethod
    def from_splits(
        cls, catalogue: Catalogue, splits: SampleSplits, window: int, top_k: int
    ) -> ProcessedData:
        """Samples of a protocol and the graph of their training sequences (Algorithm 1)."""
        sequences = GraphSequences(splits.graph_items, splits.graph_lengths, splits.graph_users)
        graph = build_interest_graph(sequences.items, sequences.lengths, catalogue.num_items,
                                     window, top_k)
        return cls(catalogue, splits.train, splits.val, splits.test,
                   edge_index=graph.edge_index.numpy(), edge_weight=graph.edge_weight.numpy(),
                   sequences=sequences, window=window, top_k=top_k)

    @property
    def graph(self) -> Data | None:
        """The item interest graph as a PyG ``Data`` (copies of the arrays), or ``None``."""
        if self.edge_index is None:
            return None
        return Data(edge_index=torch.from_numpy(np.array(self.edge_index)),
                    edge_weight=torch.from_numpy(np.array(self.edge_weight)),
                    num_nodes=self.catalogue.num_items + 1)

    def splits(self) -> dict[str, Samples]:
        """The sample sets present, by stage name."""
        return {name: getattr(self, name) for name in STAGES if getattr(self, name) is not None}

    def restrict_training_users(self, fraction: float, seed: int) -> ProcessedData:
        """Keep a random ``fraction`` of the training users, and the graph of their sequences.

        The kept users (``round(fraction * users)``, at least one, drawn with ``seed``) keep
        every training sample; the interest graph is rebuilt from exactly their training
        sequences, so a res-embedding sees no more data than a plain one (the paper's Fig. 6).
        Validation and test samples are untouched.

        Raises:
            ConfigError: ``fraction`` is not in ``(0, 1]``.
        """
        if not 0 < fraction <= 1:
            raise ConfigError(f"train_user_fraction: must lie in (0, 1], got {fraction}")
        if fraction >= 1 or self.train is None:
            return self
        users = np.unique(self.train.user)
        n = max(1, int(round(fraction * len(users))))
        kept = np.random.default_rng(seed).choice(users, size=n, replace=False)
        train = self.train.subset(np.flatnonzero(np.isin(self.train.user, kept)))
        sequences = self.sequences.of_users(kept)
        graph = build_interest_graph(sequences.items, sequences.lengths,
                                     self.catalogue.num_items, self.window, self.top_k)
        return replace(self, train=train, edge_index=graph.edge_index.numpy(),
                       edge_weight=graph.edge_weight.numpy(), sequences=sequences)

    # -- the cache's form: flat arrays ---------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a named array (``catalogue.num_items``, ``train.seq``, ...)."""
        arrays = self.catalogue.to_arrays("catalogue.")
        for name, samples in self.splits().items():
            arrays.update(samples.to_arrays(f"{name}."))
        if self.sequences is not None:
            arrays.update({f"sequences.{f.name}": getattr(self.sequences, f.name)
                           for f in fields(GraphSequences)})
        for name in ("edge_index", "edge_weight"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        arrays.update(window=np.asarray(self.window, np.int64),
                      top_k=np.asarray(self.top_k, np.int64))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ProcessedData:
        """Inverse of :meth:`to_arrays` (the arrays are kept as they are, maps included)."""
        names = {f.name for f in fields(Samples)}
        splits = {stage: Samples.from_arrays(arrays, f"{stage}.") for stage in STAGES
                  if all(f"{stage}.{n}" in arrays for n in names)}
        sequences = None
        if "sequences.items" in arrays:
            sequences = GraphSequences(**{f.name: arrays.get(f"sequences.{f.name}")
                                          for f in fields(GraphSequences)})
        return cls(Catalogue.from_arrays(arrays, "catalogue."), **splits,
                   edge_index=arrays.get("edge_index"), edge_weight=arrays.get("edge_weight"),
                   sequences=sequences, window=int(arrays.get("window", 2)),
                   top_k=int(arrays.get("top_k", 8)))
