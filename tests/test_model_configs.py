"""The model configs: backbone files and embedding files that compose, and the ready-made pairs.

``--model configs/model/<backbone>.yaml --model.embedding configs/embedding/<embedding>.yaml`` is
the model that ``configs/model/<backbone>_<embedding>.yaml`` was before the 54 product files were
replaced by the two groups: :data:`EMBEDDINGS` and :func:`_product` spell those files out.
"""

import io
import os
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

from resemb_pl import experiments
from resemb_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "configs" / "model"
EMBEDDING_FILES = ROOT / "configs" / "embedding"
BASE = ["--config", str(ROOT / "configs" / "default.yaml"),
        "--data", str(ROOT / "configs" / "data" / "synthetic_tiny.yaml")]

#: configs/model/<name>.yaml -> the backbone class it names.
BACKBONES = {"mlp": "EmbeddingMLP", "pnn": "PNN", "din": "DIN", "lr": "LogisticRegression",
             "wide_deep": "WideDeep", "deepfm": "DeepFM"}
PLAIN, RES = "resemb_pl.nn.PlainEmbedding", "resemb_pl.nn.ResEmbedding"


def _res(conv: str) -> dict:
    return {"class_path": RES, "init_args": {"conv": {"class_path": f"resemb_pl.nn.conv.{conv}"},
                                             "residual_l2": 0.006}}


#: configs/embedding/<name>.yaml -> the ``embedding:`` of the former product files.
EMBEDDINGS = {
    "plain": {"class_path": PLAIN},
    "plain_l2": {"class_path": PLAIN, "init_args": {"l2": 0.006, "l2_mode": "table"}},
    "plain_mba": {"class_path": PLAIN, "init_args": {"l2": 0.006, "l2_mode": "mba"}},
    "avg": _res("MeanConv"),
    "gcn": _res("GCNNormConv"),
    "att": _res("DotAttentionConv"),
    "skip": {"class_path": PLAIN, "init_args": {"pretrained": "pretrained/skipgram.npy"}},
    "n2v": {"class_path": PLAIN, "init_args": {"pretrained": "pretrained/node2vec.npy"}},
    "sms": {"class_path": PLAIN, "init_args": {"pretrained": "pretrained/sms.npy"}},
}
#: The ready-made pairs that README's quickstart and outside scripts name.
PAIRS = ["din_plain", "din_plain_mba", "din_avg", "din_gcn", "din_att"]
GRID = [(b, e) for b in BACKBONES for e in EMBEDDINGS]


def _product(backbone: str, embedding: str) -> dict:
    """The former ``configs/model/<backbone>_<embedding>.yaml``."""
    return {"embedding_dim": 18,
            "backbone": {"class_path": f"resemb_pl.nn.models.{BACKBONES[backbone]}"},
            "embedding": EMBEDDINGS[embedding],
            "optimizer": {"class_path": "torch.optim.Adam",
                          "init_args": {"lr": 0.001, "fused": True}}}


def _composed(backbone: str, embedding: str) -> list[str]:
    return ["--model", str(MODELS / f"{backbone}.yaml"),
            "--model.embedding", str(EMBEDDING_FILES / f"{embedding}.yaml")]


def _model_config(monkeypatch, *args) -> dict:
    """The ``model:`` section that ``resemb-pl fit ... --print_config`` prints."""
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["fit", *BASE, *map(str, args), "--print_config"])
    assert not exit_.value.code
    return yaml.safe_load(out.getvalue())["model"]


def test_one_file_per_backbone_and_per_embedding():
    assert {c.stem for c in MODELS.glob("*.yaml")} == {*BACKBONES, *PAIRS}
    assert len(list(MODELS.iterdir())) <= 20
    assert {c.stem for c in EMBEDDING_FILES.glob("*.yaml")} == set(EMBEDDINGS)
    for name in BACKBONES:  # a backbone file leaves the embedding to the embedding group
        assert "embedding" not in yaml.safe_load((MODELS / f"{name}.yaml").read_text())


@pytest.mark.parametrize(("backbone", "embedding"), GRID, ids=[f"{b}_{e}" for b, e in GRID])
def test_composed_config_is_the_former_product_file(backbone, embedding, tmp_path, monkeypatch):
    product = tmp_path / f"{backbone}_{embedding}.yaml"
    product.write_text(yaml.safe_dump(_product(backbone, embedding)))
    assert (_model_config(monkeypatch, *_composed(backbone, embedding))
            == _model_config(monkeypatch, "--model", product))


REGISTRY = [(b, e) for b in BACKBONES for e in experiments.EMBEDDINGS]


@pytest.mark.parametrize(("backbone", "embedding"), REGISTRY, ids=[f"{b}_{e}" for b, e in REGISTRY])
def test_the_experiments_registry_names_the_same_models(backbone, embedding, tmp_path,
                                                       monkeypatch):
    # The short names of resemb_pl.experiments (the paper's scripts) and the file names of
    # configs/ are one vocabulary: a name means the same model in both.
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(experiments.model_spec(backbone, embedding)))
    assert (_model_config(monkeypatch, "--model", spec)
            == _model_config(monkeypatch, *_composed(backbone, embedding)))


def test_composed_configs_by_hand(monkeypatch):
    lr_att = _model_config(monkeypatch, *_composed("lr", "att"))
    assert lr_att["embedding_dim"] == 18
    assert lr_att["backbone"]["class_path"] == "resemb_pl.nn.models.LogisticRegression"
    assert lr_att["embedding"]["class_path"] == "resemb_pl.nn.ResEmbedding"
    args = lr_att["embedding"]["init_args"]
    assert args["conv"]["class_path"] == "resemb_pl.nn.conv.DotAttentionConv"
    assert (args["residual_l2"], args["num_layers"], args["l2_mode"]) == (0.006, 1, "batch")
    assert lr_att["optimizer"]["class_path"] == "torch.optim.Adam"
    assert lr_att["optimizer"]["init_args"]["lr"] == 0.001

    deepfm_mba = _model_config(monkeypatch, *_composed("deepfm", "plain_mba"))
    assert deepfm_mba["backbone"]["class_path"] == "resemb_pl.nn.models.DeepFM"
    assert deepfm_mba["embedding"] == {
        "class_path": "resemb_pl.nn.PlainEmbedding",
        "init_args": {"l2": 0.006, "l2_mode": "mba", "init_std": 0.05, "pretrained": None}}

    wide_deep_skip = _model_config(monkeypatch, *_composed("wide_deep", "skip"))
    assert wide_deep_skip["backbone"]["class_path"] == "resemb_pl.nn.models.WideDeep"
    assert wide_deep_skip["embedding"]["init_args"]["pretrained"] == "pretrained/skipgram.npy"
    assert wide_deep_skip["embedding"]["init_args"]["l2"] == 0.0


@pytest.mark.parametrize("pair", PAIRS)
def test_ready_made_pair_is_its_composition(pair, monkeypatch):
    embedding = pair.removeprefix("din_")
    assert (_model_config(monkeypatch, "--model", MODELS / f"{pair}.yaml")
            == _model_config(monkeypatch, *_composed("din", embedding)))


@pytest.mark.parametrize(("pair", "embedding"), [
    ("din_plain_mba", "plain"), ("din_plain_mba", "skip"), ("din_att", "plain_l2"),
    ("din_gcn", "avg")])
def test_an_embedding_file_replaces_the_embedding_of_a_pair(pair, embedding, monkeypatch):
    # Each embedding file sets every option the variants differ in, so nothing of the pair's
    # embedding (an L2 mode, a pretrained table) survives under it.
    over = _model_config(monkeypatch, "--model", MODELS / f"{pair}.yaml",
                         "--model.embedding", EMBEDDING_FILES / f"{embedding}.yaml")
    assert over == _model_config(monkeypatch, *_composed("din", embedding))


def test_a_missing_embedding_file_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *BASE, "--model", str(MODELS / "din.yaml"),
              "--model.embedding", str(EMBEDDING_FILES / "attt.yaml")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resemb-pl: error:")
    assert "\n" not in err
    assert "model.embedding" in err
    assert "attt.yaml" in err


def _fit(tmp_path, monkeypatch, *model_args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main(["fit", *BASE, *map(str, model_args), "--data.cache_dir", str(tmp_path / "cache"),
          "--model.embedding_dim", "8", "--trainer.fast_dev_run=1"])


def _pretrained(tmp_path, text: str) -> None:
    found = re.search(r"pretrained: (\S+\.npy)", text)
    if found:  # tiny has 400 items
        (tmp_path / "pretrained").mkdir()
        np.save(tmp_path / found.group(1), np.ones((401, 8), dtype=np.float32))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("backbone", "embedding"), GRID, ids=[f"{b}_{e}" for b, e in GRID])
def test_composed_config_fits_through_the_cli(backbone, embedding, tmp_path, monkeypatch):
    _pretrained(tmp_path, (EMBEDDING_FILES / f"{embedding}.yaml").read_text())
    _fit(tmp_path, monkeypatch, *_composed(backbone, embedding))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("pair", PAIRS)
def test_ready_made_pair_fits_through_the_cli(pair, tmp_path, monkeypatch):
    _fit(tmp_path, monkeypatch, "--model", MODELS / f"{pair}.yaml")


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
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main(["fit", *BASE, "--model", str(tmp_path / "my_model.yaml"),
          "--data.cache_dir", str(tmp_path / "cache"), "--model.embedding_dim", "8",
          "--trainer.max_epochs=1", "--trainer.limit_val_batches=1"])
    checkpoints = list((tmp_path / "runs").rglob("*.ckpt"))
    assert checkpoints
    assert os.path.getsize(checkpoints[0]) > 0
