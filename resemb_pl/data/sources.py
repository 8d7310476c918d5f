"""Data sources: a name -> a reader of the canonical interactions table; processing to samples.

Every source but ``impressions`` (samples as logged) and ``requests`` (samples to score) is a
*reader*: a function of the data module's hyperparameters (``path``, ``seed``, ...) that returns
:class:`~resemb_pl.data.interactions.Interactions`. The DIN or MovieLens protocol, the interest
graph and the cache are then the same for all. A new source is one reader registered under a
name:

.. code-block:: python

    from resemb_pl.data.sources import register_source

    def read_my_log(hparams) -> Interactions:
        return canonicalize(pd.read_json(hparams["path"], lines=True))

    register_source("my_log", read_my_log)   # then CTRDataModule(source="my_log", path=...)
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.interactions import Interactions, check_ids, drop_short_users
from resemb_pl.data.product import ProcessedData
from resemb_pl.data.protocols import din_samples, movielens_samples
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: A reader: the data module's hyperparameters -> the canonical interactions table.
Reader = Callable[[Mapping[str, Any]], Interactions]

#: Sources that are not readers: they make their samples themselves.
SPECIAL_SOURCES = ("impressions", "requests")


def _synthetic(h: Mapping[str, Any]) -> Interactions:
    from resemb_pl.data.synthetic import generate

    return generate(h["preset"], seed=h["seed"])


def _official(name: str, **fixed: str) -> Reader:
    def read(h: Mapping[str, Any]) -> Interactions:
        from resemb_pl.data.readers import read_source

        kwargs: dict[str, Any] = {}
        if name == "amazon":
            kwargs = {"meta_path": h.get("meta_path"), "on_bad_line": h.get("on_bad_line")}
        elif name == "interactions":
            kwargs = {"columns": dict(h.get("columns") or {}), "items_path": h.get("meta_path")}
        return read_source(name, h["path"], **kwargs)

    return read


_READERS: dict[str, Reader] = {
    "synthetic": _synthetic,
    "interactions": _official("interactions"),
    "amazon": _official("amazon"),
    "movielens": _official("movielens"),
}

_BUILT_IN = frozenset(_READERS) | frozenset(SPECIAL_SOURCES)


def register_source(name: str, reader: Reader) -> None:
    """Make ``reader`` the source ``name`` of :class:`~resemb_pl.data.datamodule.CTRDataModule`.

    Args:
        name: The value of ``data.source``.
        reader: Called with the data module's hyperparameters (a mapping: ``path``, ``seed``,
            ...); returns the canonical interactions table (see
            :func:`~resemb_pl.data.interactions.canonicalize`).
    """
    if name in _BUILT_IN:
        raise ValueError(f"source {name!r} is built in")
    _READERS[name] = reader


def unregister_source(name: str) -> None:
    """Forget a source added with :func:`register_source` (the built-ins stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"source {name!r} is built in")
    _READERS.pop(name, None)


def source_names() -> list[str]:
    """Every source name ``data.source`` accepts."""
    return [*_READERS, *SPECIAL_SOURCES]


def _import_reader(name: str) -> Reader:
    """The reader named ``package.module:function``, imported and registered under ``name``."""
    module_name, _, attr = name.partition(":")
    try:
        reader = getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        raise ConfigError(f"data.source: cannot import module {module_name!r} of {name!r} "
                          f"({err})") from None
    except AttributeError:
        raise ConfigError(f"data.source: module {module_name!r} has no {attr!r}") from None
    if not callable(reader):
        raise ConfigError(f"data.source: {name!r} is not a function")
    _READERS[name] = reader
    return reader


def check_source(name: str) -> None:
    """Refuse an unknown ``data.source`` in one line listing the known ones.

    Besides the registered names, ``package.module:function`` names a reader that is imported
    on first use (so the command line reaches a user's reader without registering it).
    """
    if name in _READERS or name in SPECIAL_SOURCES:
        return
    if isinstance(name, str) and name.count(":") == 1 and all(name.split(":")):
        _import_reader(name)
        return
    raise ConfigError(f"data.source: unknown source {name!r}; choose from "
                      f"{', '.join(source_names())} or name a reader as package.module:function")


def download(h: Mapping[str, Any]) -> None:
    """Fetch ``data.download`` into ``data.path`` (and ``data.meta_path``)."""
    from resemb_pl.data import download as fetch

    name = h["download"]
    if name.startswith("amazon:"):
        reviews, meta = fetch.fetch_amazon(name.split(":", 1)[1], Path(h["path"]).parent)
        for got, want in ((reviews, h["path"]), (meta, h.get("meta_path"))):
            if want is not None and Path(got) != Path(want):
                os.replace(got, want)
    elif name in fetch.MOVIELENS_VARIANTS:
        folder = fetch.fetch_movielens(name, Path(h["path"]).parent)
        if Path(folder) != Path(h["path"]):
            os.replace(folder, h["path"])
    else:
        raise ConfigError(
            f"data.download: unknown archive {name!r}; choose from "
            f"{sorted(fetch.MOVIELENS_VARIANTS)} or amazon:<Category>"
        )


def read_interactions(h: Mapping[str, Any]) -> Interactions:
    """Read source ``h["source"]`` into the canonical table."""
    check_source(h["source"])  # imports a package.module:function reader in a fresh process
    if h["source"] in SPECIAL_SOURCES:
        raise ConfigError(f"data.source: {h['source']!r} has no interactions table")
    return _READERS[h["source"]](h)


def process(h: Mapping[str, Any], catalogue: Catalogue | None = None) -> ProcessedData:
    """Source -> samples, interest graph and catalogue (what the cache holds).

    Args:
        h: The data module's hyperparameters.
        catalogue: For ``requests``: the catalogue of the model that scores them (read from its
            checkpoint with :meth:`Catalogue.from_checkpoint`).
    """
    source = h["source"]
    if source == "requests":
        from resemb_pl.data.requests import read_requests

        if catalogue is None:
            raise ConfigError("data.source: 'requests' are read with the catalogue of a "
                              "checkpoint; resemb-pl predict takes it from --ckpt_path")
        samples, _ = read_requests(h["path"], catalogue.item_vocab, catalogue.max_len)
        return ProcessedData(catalogue, predict=samples)
    if source == "impressions":
        from resemb_pl.data.impressions import impressions_data

        return impressions_data(
            h["path"], columns=h.get("columns"), max_len=h["max_len"], split=h["split"],
            time_fractions=tuple(h["time_fractions"]), val_from=h.get("val_from"),
            test_from=h.get("test_from"), sample_negatives=h["sample_negatives"],
            window=h["window"], top_k=h["top_k"], seed=h["seed"],
        )
    data = read_interactions(h)
    check_ids(data)
    data, dropped = drop_short_users(data)
    if dropped:
        log.warning("%s: dropped %d user(s) with fewer than 2 events", data.source, dropped)
    if h["protocol"] == "movielens":
        splits = movielens_samples(data, max_len=h["max_len"], seed=h["seed"])
    else:
        splits = din_samples(data, max_len=h["max_len"], split=h["split"], seed=h["seed"],
                             train_on_val=h.get("train_on_val", False))
    if data.num_items < h["top_k"]:
        raise DataError(f"{data.source}: {data.num_items} items is fewer than "
                        f"data.top_k={h['top_k']}")
    catalogue = Catalogue.from_vocabulary(
        data.item_vocab, data.item_category(), data.category_vocab,
        item_domain=data.item_domain, max_len=h["max_len"],
    )
    return ProcessedData.from_splits(catalogue, splits, h["window"], h["top_k"])
