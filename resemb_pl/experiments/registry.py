"""One registry of short names: embeddings ``plain|avg|gcn|att`` and backbones by name.

Experiments, ``resemb-pl compare``'s front ends, the benchmark and the tests build their model
specs from here, so a short name means the same model everywhere. A spec is a ``class_path``
dict, as a model config file holds it, so a new backbone exported by
:mod:`resemb_pl.nn.models` is known by name without being listed.

Example::

    model_spec("din", "att", embedding_dim=8)["embedding"]["init_args"]["conv"]
    # {'class_path': 'resemb_pl.nn.conv.DotAttentionConv'}
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch

import resemb_pl.nn.models as models
from resemb_pl.errors import ConfigError

CONVS = {
    "avg": "resemb_pl.nn.conv.MeanConv",
    "gcn": "resemb_pl.nn.conv.GCNNormConv",
    "att": "resemb_pl.nn.conv.DotAttentionConv",
}
EMBEDDINGS = ("plain", *CONVS)

# -- model specs ----------------------------------------------------------------------------
def embedding_spec(name: str, residual_l2: float = 0.006) -> dict:
    """The ``class_path`` dict of an embedding: ``plain`` or a res-embedding ``avg|gcn|att``."""
    if name == "plain":
        return {"class_path": "resemb_pl.nn.PlainEmbedding"}
    if name not in CONVS:
        raise ConfigError(f"unknown embedding {name!r}; choose from {', '.join(EMBEDDINGS)}")
    return {
        "class_path": "resemb_pl.nn.ResEmbedding",
        "init_args": {"conv": {"class_path": CONVS[name]}, "residual_l2": residual_l2},
    }


def conv_class(name: str) -> type[torch.nn.Module]:
    """The graph layer class of a res-embedding short name ``avg|gcn|att`` (not imported twice).

    Raises:
        ConfigError: ``name`` is not a res-embedding of :data:`CONVS`.
    """
    if name not in CONVS:
        raise ConfigError(f"unknown res-embedding {name!r}; choose from {', '.join(CONVS)}")
    module, _, cls = CONVS[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def available_backbones() -> dict[str, str]:
    """Backbone names -> class paths, for the classes :mod:`resemb_pl.nn.models` exports now.

    A backbone is known by its class name and by its module's name (``EmbeddingMLP`` in
    ``mlp.py`` is ``embeddingmlp`` and ``mlp``), lower case, letters and digits only.
    """
    found, by_module = {}, {}
    for name in getattr(models, "__all__", dir(models)):
        obj = getattr(models, name, None)
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj is not getattr(
            models, "CTRBackbone", None
        ):
            found[_norm(name)] = f"resemb_pl.nn.models.{name}"
            by_module.setdefault(_norm(obj.__module__.rpartition(".")[2]), []).append(name)
    for module, names in by_module.items():
        if len(names) == 1:
            found.setdefault(module, f"resemb_pl.nn.models.{names[0]}")
    return found


def backbone_spec(name: str) -> dict:
    """The ``class_path`` dict of a backbone exported by :mod:`resemb_pl.nn.models`.

    Matching ignores case and punctuation: ``wide_deep`` finds ``WideDeep``.
    """
    found = available_backbones()
    if _norm(name) not in found:
        raise ConfigError(
            f"unknown backbone {name!r}; resemb_pl.nn.models has {', '.join(sorted(found))}"
        )
    return {"class_path": found[_norm(name)]}


def model_spec(
    backbone: str,
    embedding: str,
    *,
    embedding_dim: int = 18,
    lr: float = 1e-3,
    residual_l2: float = 0.006,
) -> dict:
    """Keyword arguments of :class:`~resemb_pl.task.CTRTask` (less the data sizes)."""
    return {
        "embedding_dim": embedding_dim,
        "embedding": embedding_spec(embedding, residual_l2),
        "backbone": backbone_spec(backbone),
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr, "fused": True}},
    }


def check_names(*, backbones: Iterable[str] = (), embeddings: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` before any training on a backbone or embedding name unknown."""
    for name in backbones:
        backbone_spec(name)
    for name in embeddings:
        embedding_spec(name)


