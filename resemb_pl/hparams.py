"""The run's hyperparameters as TensorBoard's HPARAMS tab shows them: flat keys, plain values."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from resemb_pl.errors import ConfigError
from resemb_pl.factory import locate
from resemb_pl.provenance import provenance

#: The metrics that TensorBoard's HPARAMS tab shows beside each run's hyperparameters.
HPARAMS_METRICS = ("val/auc", "val/gauc", "test/auc", "test/gauc")


def _class_name(spec) -> str:
    """``ResEmbedding`` for ``{"class_path": "resemb_pl.nn.ResEmbedding", ...}``; ``none``."""
    if spec is None:
        return "none"
    if isinstance(spec, dict) and "class_path" in spec:
        return str(spec["class_path"]).rpartition(".")[2]
    return getattr(spec, "__name__", str(spec))


def _init_arg(spec, name: str, missing: float | str) -> float | str:
    """An argument of a ``class_path`` spec: its ``init_args`` value, else the class's default.

    ``missing`` when the class takes no such argument (or it is ``None``).
    """
    if not isinstance(spec, dict) or "class_path" not in spec:
        return missing
    args = spec.get("init_args") or {}
    if name in args:
        value = args[name]
    else:
        try:
            parameter = inspect.signature(locate(spec["class_path"])).parameters.get(name)
        except (ConfigError, TypeError, ValueError):
            parameter = None
        if parameter is None or parameter.default is inspect.Parameter.empty:
            return missing
        value = parameter.default
    return missing if value is None else value


def readable_hparams(hparams: Mapping, data: Mapping | None = None) -> dict[str, str | int | float]:
    """A task's (and its data's) hyperparameters as flat keys with one plain value each.

    The same keys for every run, whatever its embedding, so that TensorBoard's HPARAMS tab shows
    runs side by side: ``embedding``, ``conv`` and ``backbone`` (class names; ``conv`` is
    ``none`` without one), ``residual_l2`` (0 for an embedding without a residual),
    ``embedding_l2`` (a plain embedding's ``l2``), ``num_layers``, ``optimizer``, ``lr`` (0 if
    unknown), ``weight_decay``, ``lr_scheduler``, ``embedding_dim``, ``num_items``,
    ``num_categories``,
    ``data_source``, ``data_path`` (empty for synthetic data), ``data_preset`` (synthetic data
    only), ``data_seed``, ``batch_size``, ``max_len``, ``seed`` (the run's
    ``seed_everything``, -1 if none), ``version`` and ``git_commit``
    (:func:`resemb_pl.provenance.provenance`).

    Args:
        hparams: The task's ``hparams`` (factories as ``class_path`` dicts).
        data: The data module's ``hparams``, if any.

    Example::

        readable_hparams(task.hparams, datamodule.hparams)["conv"]  # 'DotAttentionConv'
    """
    embedding, optimizer = hparams.get("embedding"), hparams.get("optimizer")
    data = data or {}
    source = str(data.get("source", ""))
    conv = _init_arg(embedding, "conv", "none")
    seed = os.environ.get("PL_GLOBAL_SEED", "")
    return {
        "embedding": _class_name(embedding),
        "conv": conv if conv == "none" else _class_name(conv),
        "backbone": _class_name(hparams.get("backbone")),
        "residual_l2": float(_init_arg(embedding, "residual_l2", 0.0)),
        "embedding_l2": float(_init_arg(embedding, "l2", 0.0)),
        "num_layers": int(_init_arg(embedding, "num_layers", 0)),
        "optimizer": _class_name(optimizer),
        "lr": float(_init_arg(optimizer, "lr", 0.0)),
        "weight_decay": float(_init_arg(optimizer, "weight_decay", 0.0)),
        "lr_scheduler": _class_name(hparams.get("lr_scheduler")),
        "embedding_dim": int(hparams.get("embedding_dim", 0)),
        "num_items": int(hparams.get("num_items", 0)),
        "num_categories": int(hparams.get("num_categories", 0)),
        "data_source": source,
        "data_path": str(data.get("path") or ""),
        "data_preset": str(data.get("preset", "")) if source == "synthetic" else "",
        "data_seed": int(data.get("seed", -1)),
        "batch_size": int(data.get("batch_size", 0)),
        "max_len": int(data.get("max_len", 0)),
        "seed": int(seed) if seed.lstrip("-").isdigit() else -1,
        **provenance(),
    }


@rank_zero_only
def log_tensorboard_hparams(
    logger: TensorBoardLogger, params: dict[str, str | int | float], metrics: Sequence[str]
) -> None:
    """Write ``params`` as the run's hyperparameters and ``metrics`` as its HPARAMS metrics.

    Only the names of ``metrics`` are written: the tab shows the last value that the run logs
    under each (``test/auc`` once the run is tested), so no placeholder value is logged. The
    parameters also go to the logger's ``hparams.yaml``.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    logger.hparams.update(params)  # what log_hyperparams keeps for hparams.yaml
    experiment, start, end = hparams_summary(params, dict.fromkeys(metrics, 0.0))
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)

