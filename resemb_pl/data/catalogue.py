"""The catalogue: what the model must know of the data to score original ids.

A :class:`Catalogue` is the item side of processed data: the counts, the item -> category
table, the original item and category ids, the true interest domains (synthetic data only) and
the training history length. The task keeps it as one checkpoint entry
(:data:`CHECKPOINT_KEY`), so a checkpoint alone is enough to read requests with original ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from resemb_pl.errors import CheckpointError

#: The checkpoint entry that holds the catalogue (the name of the vocabulary entry it replaces,
#: so that tools reading ``items`` and ``categories`` from it keep working).
CHECKPOINT_KEY = "resemb_vocab"
#: Version of the checkpoint entry. Version 1 (no ``version`` key) held ``items`` and
#: ``categories`` only, the item -> category table being the task's ``item_category`` buffer.
CHECKPOINT_VERSION = 2


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The items and categories of a data set, with their original ids.

    Args:
        num_items: Number of items ``H``; dense items are ``1..H`` (0 is padding).
        num_categories: Number of categories ``C``; dense categories are ``1..C`` (0: unknown).
        item_category: Dense category of every dense item ``(H + 1,)``.
        item_vocab: Original item ids as strings ``(H,)``; item ``i`` is ``item_vocab[i - 1]``.
        category_vocab: Category names ``(C,)``; category ``c`` is ``category_vocab[c - 1]``.
        item_domain: True interest domain of every dense item ``(H + 1,)`` (synthetic data),
            else ``None``.
        max_len: Longest history the model was trained on, or ``None`` where unknown.

    Example::

        catalogue = Catalogue.from_vocabulary(["a", "b"], [0, 1, 1], ["shoes"])
        catalogue.num_items  # 2
    """

    num_items: int
    num_categories: int
    item_category: np.ndarray
    item_vocab: np.ndarray
    category_vocab: np.ndarray
    item_domain: np.ndarray | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if len(self.item_vocab) != self.num_items or len(self.item_category) != self.num_items + 1:
            raise CheckpointError(
                f"catalogue: {len(self.item_vocab)} item ids and {len(self.item_category)} "
                f"categories for num_items={self.num_items} (want H and H + 1)"
            )

    @classmethod
    def from_vocabulary(
        cls,
        item_vocab: Sequence[Any] | np.ndarray,
        item_category: Sequence[int] | np.ndarray,
        category_vocab: Sequence[Any] | np.ndarray,
        **kwargs: Any,
    ) -> Catalogue:
        """A catalogue whose counts are those of the vocabularies."""
        return cls(
            num_items=len(item_vocab), num_categories=len(category_vocab),
            item_category=np.asarray(item_category, dtype=np.int64),
            item_vocab=np.asarray(item_vocab).astype(str),
            category_vocab=np.asarray(category_vocab).astype(str), **kwargs,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Catalogue):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    # -- the cache's form: flat arrays ---------------------------------------------------------
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The fields as arrays named ``<prefix><field>`` (absent fields are left out)."""
        values = {f"{prefix}{f.name}": getattr(self, f.name) for f in fields(self)}
        return {name: value if isinstance(value, np.ndarray) else np.asarray(value)
                for name, value in values.items() if value is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> Catalogue:
        """Inverse of :meth:`to_arrays`; scalars come back as ints, arrays as they are."""
        values = {f.name: arrays.get(f"{prefix}{f.name}") for f in fields(cls)}
        for name in ("num_items", "num_categories", "max_len"):
            if values[name] is not None:
                values[name] = int(values[name])
        return cls(**values)

    # -- the checkpoint's form: one entry --------------------------------------------------------
    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint entry: plain lists and tensors, loadable with ``weights_only=True``."""
        return {
            "version": CHECKPOINT_VERSION,
            "num_items": self.num_items,
            "num_categories": self.num_categories,
            "items": [str(v) for v in self.item_vocab],
            "categories": [str(v) for v in self.category_vocab],
            "item_category": torch.as_tensor(np.array(self.item_category, dtype=np.int64)),
            "item_domain": None if self.item_domain is None
            else torch.as_tensor(np.array(self.item_domain, dtype=np.int64)),
            "max_len": self.max_len,
        }

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Mapping[str, Any], source: str = "checkpoint"
    ) -> Catalogue:
        """Read the catalogue of a loaded checkpoint, of this version or of version 1.

        A version-1 checkpoint (no ``version`` in the entry) kept the item -> category table in
        ``state_dict["item_category"]``, the counts in ``hyper_parameters`` and the history
        length in ``datamodule_hyper_parameters``; they are read from there.

        Args:
            checkpoint: The loaded checkpoint (see :func:`resemb_pl.checkpoint.load_checkpoint`).
            source: Name of the checkpoint for messages (its path).

        Raises:
            CheckpointError: The checkpoint has no catalogue, or one of another version.
        """
        entry = checkpoint.get(CHECKPOINT_KEY)
        version = entry.get("version", 1) if isinstance(entry, Mapping) else None
        if version == CHECKPOINT_VERSION:
            domain = entry.get("item_domain")
            return cls(
                num_items=int(entry["num_items"]), num_categories=int(entry["num_categories"]),
                item_category=_numpy(entry["item_category"]),
                item_vocab=np.asarray(entry["items"], dtype=str),
                category_vocab=np.asarray(entry["categories"], dtype=str),
                item_domain=None if domain is None else _numpy(domain),
                max_len=entry.get("max_len"),
            )
        category = (checkpoint.get("state_dict") or {}).get("item_category")
        if version == 1 and category is not None:
            hparams = checkpoint.get("hyper_parameters") or {}
            data = checkpoint.get("datamodule_hyper_parameters") or {}
            return cls(
                num_items=int(hparams.get("num_items", len(entry["items"]))),
                num_categories=int(hparams.get("num_categories", len(entry["categories"]))),
                item_category=_numpy(category),
                item_vocab=np.asarray(entry["items"], dtype=str),
                category_vocab=np.asarray(entry["categories"], dtype=str),
                max_len=int(data["max_len"]) if data.get("max_len") else None,
            )
        if version is None or version == 1:
            raise CheckpointError(
                f"{source}: the checkpoint has no id vocabulary ({CHECKPOINT_KEY}) or "
                "item_category; retrain it with this version of resemb-pl"
            )
        raise CheckpointError(
            f"{source}: its catalogue ({CHECKPOINT_KEY}) is version {version!r}; this "
            f"resemb-pl reads versions 1 to {CHECKPOINT_VERSION}"
        )


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.int64)
    return np.asarray(value, dtype=np.int64)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b
