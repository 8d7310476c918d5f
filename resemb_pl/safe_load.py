"""Loading checkpoint files that may not be trusted, and checking them against the model.

- :func:`load_checkpoint`: ``torch.load(weights_only=True)`` and a check that the file is shaped
  like a Lightning checkpoint; a file that would run code when unpickled is refused, and its
  code never runs.
- :func:`check_checkpoint`: the shape check alone, for a checkpoint already loaded.
- :func:`check_compatible`: whether a checkpoint was written by the same model on the same item
  vocabulary, naming the first key that differs.

:mod:`resemb_pl.checkpoint` (the trainer's checkpoint I/O and pre-emption) re-exports all three.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule

from resemb_pl.errors import CheckpointError, ConfigError
from resemb_pl.factory import describe, locate


def _first_sentence(exc: BaseException) -> str:
    return " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", *, required: Iterable[str] = ()
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    The file must hold what Lightning writes (see :func:`check_checkpoint`).

    Args:
        path: The checkpoint file.
        map_location: Where the tensors go.
        required: Top-level keys the caller needs, e.g. ``hyper_parameters`` to rebuild the
            model from the file alone (see :data:`REQUIRED_KEYS`).

    Raises:
        CheckpointError: If the file is missing, unreadable, holds anything but plain data
            (a pickled object that would run code on load is refused, and its code never runs),
            or is not shaped like a Lightning checkpoint (a tensor, a list, a bare state_dict),
            naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(err))
        what = f"it would call {found[1]} when unpickled" if found else _first_sentence(err)
        raise CheckpointError(
            f"{path}: refused: {what}; only weights and plain data load (weights_only=True)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        reason = _first_sentence(err)
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    return check_checkpoint(checkpoint, path, required)


#: Why a caller needs each top-level key of a checkpoint, for the message when it is missing.
REQUIRED_KEYS = {
    "hyper_parameters": "to rebuild the model from",
    "pytorch-lightning_version": "(it was not written by a Lightning Trainer)",
    "optimizer_states": "to resume training from (it holds the weights only)",
    "lr_schedulers": "to resume training from (it holds the weights only)",
}


def check_checkpoint(
    checkpoint: Any, path: str | Path, required: Iterable[str] = ()
) -> dict[str, Any]:
    """Refuse a loaded file that is not shaped like a Lightning checkpoint; return it.

    A Lightning checkpoint is a dict whose ``state_dict`` is a dict of tensors, whose
    ``hyper_parameters`` and ``resemb_vocab`` (where present) are dicts, the latter with
    ``items`` and ``categories`` lists, and which holds every key in ``required``.

    Raises:
        CheckpointError: ``<path>: not a Lightning checkpoint: <what>`` (a tensor, a list, a bare
            state_dict, a key of the wrong type or missing).
    """
    problem = _shape_problem(checkpoint)
    if problem is None:
        missing = [key for key in required if key not in checkpoint]
        if missing:
            why = REQUIRED_KEYS.get(missing[0], "")
            problem = f"it has no {missing[0]!r} {why}".rstrip()
    if problem:
        raise CheckpointError(f"{path}: not a Lightning checkpoint: {problem}")
    return checkpoint


def _kind(value: Any) -> str:
    if value is None:
        return "missing"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _shape_problem(checkpoint: Any) -> str | None:
    """What makes ``checkpoint`` unlike a Lightning checkpoint, or ``None``."""
    if not isinstance(checkpoint, dict):
        return f"it holds {_kind(checkpoint)}, not a dict with a 'state_dict'"
    if "state_dict" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return ("it holds a bare state_dict (tensors only); save a Lightning checkpoint "
                    "with Trainer.save_checkpoint")
        return "it has no 'state_dict'"
    weights = checkpoint["state_dict"]
    if not isinstance(weights, dict):
        return f"its 'state_dict' is {_kind(weights)}, not a dict of tensors"
    for name, value in weights.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            return f"its 'state_dict' entry {name!r} is {_kind(value)}, not a tensor"
    for key in ("hyper_parameters", "resemb_vocab"):
        if key in checkpoint and not isinstance(checkpoint[key], dict):
            return f"its '{key}' is {_kind(checkpoint[key])}, not a dict"
    if "resemb_vocab" in checkpoint:
        for key in ("items", "categories"):
            value = checkpoint["resemb_vocab"].get(key)
            if not isinstance(value, (list, tuple)):
                return f"its 'resemb_vocab' {key!r} is {_kind(value)}, not a list"
    return None


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
