"""Factories as plain data: ``{"class_path": ..., "init_args": {...}}`` <-> callables.

Hyperparameters stored in a checkpoint must load with ``torch.load(weights_only=True)``, so the
task keeps its factories (embedding, conv, backbone, optimizer) as the same dicts that the
Lightning CLI reads from YAML, and builds the callables from them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from resemb_pl.errors import ConfigError


def describe(obj: Any) -> Any:
    """Turn a class, function or ``functools.partial`` (nested too) into plain data.

    jsonargparse's factories, ``partial(call_without_instantiate_context, instantiator, cls,
    **kwargs)``, are described as ``cls`` with ``kwargs``.
    """
    if isinstance(obj, dict):
        return {k: describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, functools.partial):
        func, args = obj.func, obj.args
        if getattr(func, "__name__", "") == "call_without_instantiate_context" and len(args) == 2:
            func, args = args[1], ()
        if args:
            raise ConfigError(f"cannot store a factory with positional arguments: {obj!r}")
        spec = describe(func)
        init_args = {**spec.get("init_args", {}), **describe(obj.keywords)}
        return {"class_path": spec["class_path"], "init_args": init_args} if init_args else spec
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return {"class_path": f"{obj.__module__}.{obj.__qualname__}"}
    if callable(obj):
        raise ConfigError(f"cannot store {obj!r} as a class_path factory")
    return obj


def locate(path: str) -> Any:
    """Import ``package.module.Name`` (or a bare name from the modules already imported)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"class_path {path!r} cannot be imported: {err}") from None


def build(spec: Any) -> Any:
    """Inverse of :func:`describe`: a callable for a ``class_path`` dict, else the value."""
    if isinstance(spec, dict) and "class_path" in spec:
        unknown = set(spec) - {"class_path", "init_args"}
        if unknown:
            raise ConfigError(f"unexpected key(s) {sorted(unknown)} beside class_path {spec['class_path']!r}")
        target = locate(spec["class_path"])
        kwargs = {k: build(v) for k, v in (spec.get("init_args") or {}).items()}
        return functools.partial(target, **kwargs) if kwargs else target
    if isinstance(spec, list):
        return [build(v) for v in spec]
    return spec


def as_factory(obj: Any) -> Callable:
    """A callable from either a callable or its plain-data description."""
    return obj if callable(obj) else build(obj)
