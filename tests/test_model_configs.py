import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from resemb_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "model").glob("*.yaml"))
BACKBONES = ["mlp", "pnn", "din", "lr", "wide_deep", "deepfm"]
EMBEDDINGS = ["plain", "plain_l2", "plain_mba", "avg", "gcn", "att", "skip", "n2v", "sms"]


def test_there_is_a_config_for_every_backbone_and_embedding():
    names = {c.stem for c in CONFIGS}
    assert {f"{b}_{e}" for b in BACKBONES for e in EMBEDDINGS} <= names


def _fit(tmp_path, monkeypatch, model, *extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main(["fit", "--config", str(ROOT / "configs" / "default.yaml"),
          "--data", str(ROOT / "configs" / "data" / "synthetic_tiny.yaml"),
          "--model", str(model), "--data.cache_dir", str(tmp_path / "cache"),
          "--model.embedding_dim", "8", *extra])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_model_config_fits_through_the_cli(config, tmp_path, monkeypatch):
    pretrained = re.search(r"pretrained: (\S+\.npy)", config.read_text())
    if pretrained:  # tiny has 400 items
        (tmp_path / "pretrained").mkdir()
        np.save(tmp_path / pretrained.group(1), np.ones((401, 8), dtype=np.float32))
    _fit(tmp_path, monkeypatch, config, "--trainer.fast_dev_run=1")


def _readme_example() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Add your own graph convolution", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yaml = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return python, yaml


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_readme_custom_conv_trains_an_epoch_from_outside_the_package(tmp_path, monkeypatch):
    python, yaml = _readme_example()
    assert len(python.strip().splitlines()) < 30
    (tmp_path / "my_conv.py").write_text(python)
    (tmp_path / "my_model.yaml").write_text(yaml)
    monkeypatch.syspath_prepend(str(tmp_path))
    _fit(tmp_path, monkeypatch, tmp_path / "my_model.yaml", "--trainer.max_epochs=1",
         "--trainer.limit_val_batches=1")
    checkpoints = list((tmp_path / "runs").rglob("*.ckpt"))
    assert checkpoints
    assert os.path.getsize(checkpoints[0]) > 0
