"""Checkpoints that are safe to load, written atomically, and saved when a run is pre-empted.

- :class:`SafeCheckpointIO`: the trainer's checkpoint I/O. It writes to a temporary file in the
  target folder, flushes it to disk and renames it over the target, so a run killed while
  saving leaves the previous checkpoint intact. It loads with ``torch.load(weights_only=True)``
  only, so a checkpoint that would run code when unpickled is refused.
- :class:`PreemptionCheckpoint`: on SIGTERM, saves a resumable ``last.ckpt`` before exiting.
- :func:`load_checkpoint`: the same safe loading for code outside the trainer.
- :func:`find_last_checkpoint`: the newest ``last*.ckpt`` of a run, across logger versions, for
  ``resemb-pl fit --ckpt_path last``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from resemb_pl.atomic import atomic_open
from resemb_pl.errors import CheckpointError, ConfigError
from resemb_pl.factory import describe, locate

log = logging.getLogger(__name__)


def _first_sentence(exc: BaseException) -> str:
    return " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    Raises:
        CheckpointError: If the file is missing, unreadable, or holds anything but plain data
            (a pickled object that would run code on load is refused, and its code never runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(err))
        what = f"it would call {found[1]} when unpickled" if found else _first_sentence(err)
        raise CheckpointError(
            f"{path}: refused: {what}; only weights and plain data load (weights_only=True)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        reason = _first_sentence(err)
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    with atomic_open(path, fsync=True) as fh:
        torch.save(obj, fh)


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes and ``weights_only=True`` reads for local paths.

    Example::

        trainer = Trainer(plugins=[SafeCheckpointIO()])
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            log.warning("%s: loading with weights_only=True regardless of the request", path)
        return load_checkpoint(path, map_location=map_location)


class PreemptionCheckpoint(Callback):
    """On SIGTERM, write ``last.ckpt`` of every ``ModelCheckpoint(save_last=True)`` and stop.

    Lightning turns SIGTERM into an exception at the end of the current training batch, with
    the loop counters consistent; the checkpoint saved here resumes from the next batch with
    ``resemb-pl fit ... --ckpt_path last``. Without such a callback in the trainer the
    checkpoint goes to ``<log_dir>/checkpoints/last.ckpt``, where that finds it too.
    """

    def __init__(self) -> None:
        self.saved: list[str] = []

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        paths = [
            Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath
        ] or [Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"]
        for path in paths:
            trainer.save_checkpoint(path)
            self.saved.append(str(path))
            log.warning("SIGTERM: saved a resumable checkpoint to %s", path)


def find_last_checkpoint(trainer: Trainer) -> str | None:
    """The newest ``last*.ckpt`` written by this run's configuration, or ``None``.

    Looks in each ``ModelCheckpoint``'s ``dirpath`` where set, else in the ``checkpoints``
    folder of every version of the first logger (a new run gets a new logger version, so
    Lightning's own ``ckpt_path="last"`` would only look in the new, empty one).
    """
    folders: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            folders.append(Path(cb.dirpath))
    if not folders and trainer.loggers:
        root = getattr(trainer.loggers[0], "root_dir", None)
        if root is not None:
            folders.extend(p / "checkpoints" for p in Path(root).glob("*"))
    if not folders:
        folders.append(Path(trainer.default_root_dir) / "checkpoints")
    found = [f for folder in folders for f in folder.glob("last*.ckpt") if f.is_file()]
    return str(max(found, key=lambda f: f.stat().st_mtime)) if found else None


# Hyperparameters that fix the architecture: a checkpoint must agree on all of them.
MODEL_KEYS = ("num_items", "num_categories", "embedding_dim", "embedding", "backbone")


def _canonical(value: Any) -> Any:
    """A factory description with the class's defaults filled in and its class_path resolved."""
    if isinstance(value, dict) and "class_path" in value:
        args = {k: _canonical(v) for k, v in (value.get("init_args") or {}).items()}
        try:
            target = locate(value["class_path"])
            params = inspect.signature(target).parameters.values()
        except (ConfigError, TypeError, ValueError):
            return {"class_path": value["class_path"], "init_args": args}
        for param in params:
            if param.default is not param.empty and param.name not in args:
                with contextlib.suppress(ConfigError):
                    args[param.name] = _canonical(describe(param.default))
        return {"class_path": f"{target.__module__}.{target.__qualname__}", "init_args": args}
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _short(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        args = value.get("init_args") or {}
        inner = ", ".join(f"{k}={_short(v)}" for k, v in args.items())
        return f"{value['class_path'].rsplit('.', 1)[-1]}({inner})"
    return repr(value)


def check_compatible(
    checkpoint: dict[str, Any],
    module: LightningModule,
    item_vocab: list[str] | None,
    source: str = "checkpoint",
) -> None:
    """Check that a checkpoint was written by the same model on the same item vocabulary.

    Compares the architecture hyperparameters (:data:`MODEL_KEYS`), the original item ids
    (``resemb_vocab``, when both sides know them), and the names and shapes of the parameters.
    Buffers may differ in size (the interest graph takes the checkpoint's).

    Args:
        checkpoint: The loaded checkpoint.
        module: The model it is loaded into.
        item_vocab: The original item ids of the data in use, or ``None`` if unknown.
        source: Name of the checkpoint for messages (its path).

    Raises:
        CheckpointError: Naming the first key that differs.
    """
    saved, hparams = checkpoint.get("hyper_parameters") or {}, module.hparams
    for key in MODEL_KEYS:
        if key in saved and key in hparams and _canonical(saved[key]) != _canonical(hparams[key]):
            what = "for another item vocabulary" if key.startswith("num_") else "by another model"
            raise CheckpointError(
                f"{source}: written {what}: model.{key} is {_short(saved[key])} "
                f"there but {_short(hparams[key])} here"
            )
    vocab = (checkpoint.get("resemb_vocab") or {}).get("items")
    if vocab is not None and item_vocab is not None and list(vocab) != list(item_vocab):
        pairs = zip(vocab, item_vocab, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        where = (
            f"{len(vocab)} items there but {len(item_vocab)} here"
            if first is None
            else f"item {first + 1} is {vocab[first]!r} there but {item_vocab[first]!r} here"
        )
        raise CheckpointError(f"{source}: written for another item vocabulary: {where}")
    weights = checkpoint.get("state_dict")
    if weights is None:
        return
    unexpected = sorted(set(weights) - set(module.state_dict()))
    if unexpected:
        raise CheckpointError(f"{source}: written by another model: unexpected {unexpected[0]!r}")
    for name, param in module.named_parameters():
        if name not in weights:
            raise CheckpointError(f"{source}: written by another model: no weight {name!r}")
        if tuple(weights[name].shape) != tuple(param.shape):
            raise CheckpointError(
                f"{source}: written by another model or vocabulary: weight {name!r} has shape "
                f"{tuple(weights[name].shape)} there but {tuple(param.shape)} here"
            )
