"""The "add a data source" recipe: a reader defined outside the package, registered under a
name, then prepared (samples, graph, cache) and trained on like any built-in source."""

import json

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch import Trainer

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.interactions import Interactions, canonicalize
from resemb_pl.data.sources import register_source, source_names, unregister_source
from resemb_pl.errors import ConfigError
from resemb_pl.task import CTRTask


def read_toy_log(hparams) -> Interactions:
    """A JSON-lines click log: {"who": ..., "what": ..., "kind": ..., "when": ...} per line."""
    frame = pd.read_json(hparams["path"], lines=True)
    return canonicalize(frame, user="who", item="what", category="kind", timestamp="when",
                        source=str(hparams["path"]))


@pytest.fixture
def toy_source():
    register_source("toy_log", read_toy_log)
    yield "toy_log"
    unregister_source("toy_log")


def write_log(path, users=12, length=6):
    with open(path, "w") as fh:
        for u in range(users):
            for t in range(length):
                item = (u + t) % 9
                fh.write(json.dumps({"who": f"u{u}", "what": f"sku{item}",
                                     "kind": "even" if item % 2 == 0 else "odd",
                                     "when": t}) + "\n")
    return path


def test_registered_reader_prepares_and_trains(toy_source, tmp_path):
    path = write_log(tmp_path / "clicks.jsonl")
    assert toy_source in source_names()
    dm = CTRDataModule(source=toy_source, path=str(path), cache_dir=str(tmp_path / "cache"),
                       top_k=2, batch_size=8)
    dm.prepare_data()
    assert (tmp_path / "cache").is_dir()  # cached like a built-in source
    # 12 users of 6 clicks under split 'last': 3 training pairs each, a positive and a negative.
    assert (dm.num_items, dm.num_categories) == (9, 2)
    assert len(dm.samples("train")) == 12 * 3 * 2
    assert sorted(dm.catalogue.item_vocab) == [f"sku{i}" for i in range(9)]
    names = dm.catalogue.category_vocab[dm.item_category[1:] - 1]
    assert {(v, n) for v, n in zip(dm.catalogue.item_vocab, names, strict=True)} == {
        (f"sku{i}", "even" if i % 2 == 0 else "odd") for i in range(9)}
    assert dm.graph.edge_index.size(1) > 0

    task = CTRTask(dm.num_items, dm.num_categories, embedding_dim=4)
    trainer = Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, dm)
    assert trainer.global_step == 1
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert task.catalogue == dm.catalogue


def test_unknown_and_built_in_source_names(toy_source):
    with pytest.raises(ConfigError, match="data.source: unknown source 'toy'; choose from "
                                          "synthetic, interactions"):
        CTRDataModule(source="toy", path="x")
    with pytest.raises(ValueError, match="source 'synthetic' is built in"):
        register_source("synthetic", read_toy_log)


def test_the_command_line_reaches_a_reader_by_module_and_function(tmp_path, monkeypatch, capsys):
    from resemb_pl.cli import main

    path = write_log(tmp_path / "clicks.jsonl")
    monkeypatch.chdir(tmp_path)
    source = f"{read_toy_log.__module__}:read_toy_log"  # this module, not registered
    main(["fit", "--data.source", source, "--data.path", str(path), "--data.top_k", "2",
          "--data.batch_size", "8", f"--data.cache_dir={tmp_path / 'cache'}",
          "--model.embedding_dim", "4", "--trainer.max_steps", "1",
          "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
          "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false"])
    assert any(p.is_dir() and p.name.startswith(source) for p in (tmp_path / "cache").iterdir())
    for bad, why in ((f"{read_toy_log.__module__}:nothing_here", "has no 'nothing_here'"),
                     ("no_such_module_xyz:read", "cannot import module 'no_such_module_xyz'")):
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--data.source", bad, "--data.path", str(path),
                  f"--data.cache_dir={tmp_path / 'cache'}"])
        assert exc.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines()
               if line.startswith("resemb-pl: error")]
        assert len(err) == 1 and why in err[0], err
