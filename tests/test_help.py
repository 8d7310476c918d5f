"""``--help`` of every command: short, the project's own description, our classes listed."""

import re
import sys
from pathlib import Path

import pytest
import torch

import resemb_pl
from resemb_pl import cli_help
from resemb_pl.cli import DESCRIPTION, SUBCOMMANDS, main
from resemb_pl.export import COMMANDS
from resemb_pl.export import main as export_main
from resemb_pl.pretrain.__main__ import main as pretrain_main

ROOT = Path(__file__).resolve().parents[1]
# Lightning's and jsonargparse's own descriptions, which must not stand for ours.
FOREIGN = ("Lightning Trainer command line tool", "Runs the full optimization routine",
           "Perform one evaluation epoch", "Run inference on your data")


def _help(entry, argv, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    with pytest.raises(SystemExit) as exc:
        entry(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_fit_help_is_short_and_lists_our_backbones_and_embeddings(capsys, monkeypatch):
    out = _help(main, ["fit", "--help"], capsys, monkeypatch)
    assert len(out.splitlines()) < 300
    flat = _flat(out)
    for name in ("DIN", "DeepFM", "EmbeddingMLP", "LogisticRegression", "PNN", "WideDeep"):
        assert f"resemb_pl.nn.models.{name}" in flat
    for name in ("PlainEmbedding", "ResEmbedding"):
        assert f"resemb_pl.nn.{name}" in flat
    # Not every installed nn.Module: no activations, losses, metrics or PyG LLM modules.
    for other in ("torch.nn.ReLU", "torch.nn.HingeEmbeddingLoss", "torchmetrics", "GITMol"):
        assert other not in flat
    assert _flat(SUBCOMMANDS["fit"][0]) in flat
    assert not any(text in flat for text in FOREIGN)
    # Our options keep their whole documentation; Lightning's keep their first sentence.
    assert "About half the optimizer time" in flat
    assert "Stop training once this number of epochs is reached. (default: null)" in flat
    assert "max_epochs = 1000" not in flat
    # Subclasses of Lightning's and torch's base classes: ours named, theirs counted (in the
    # order they were imported).
    callbacks = _flat(out.split("--trainer.callbacks CALLBACKS")[1].split("\n  --")[0])
    assert "resemb_pl.checkpoint.PreemptionCheckpoint" in callbacks
    assert re.search(r" and (\d+ from \w+, )*\d+ from lightning(, \d+ from \w+)*\)$", callbacks)
    assert "EarlyStopping" not in callbacks
    optimizers = _flat(out.split("--model.optimizer OPTIMIZER")[1].split("\n  --")[0])
    assert "resemb_pl.optim.RowAdam" in optimizers
    assert re.search(r" and (\d+ from \w+, )*\d+ from torch(, \d+ from \w+)*\)$", optimizers)
    assert "torch.optim.SGD" not in optimizers
    # The usage names the top-level options only.
    usage = out.split("\n\n")[0]
    assert usage.startswith("usage: resemb-pl [options] fit ")
    assert "--model CONFIG" in usage
    assert "--trainer.max_epochs" not in usage


def test_class_help_still_prints_one_class(capsys, monkeypatch):
    out = _help(main, ["fit", "--model.backbone.help", "DIN"], capsys, monkeypatch)
    assert "--model.backbone.attention_hidden" in out


def test_top_level_help_describes_the_project(capsys, monkeypatch):
    flat = _flat(_help(main, ["--help"], capsys, monkeypatch))
    assert _flat(DESCRIPTION) in flat
    for name, (_, line) in SUBCOMMANDS.items():
        assert f"{name} {line}" in flat
    assert not any(text in flat for text in FOREIGN)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_every_subcommand_has_our_description(subcommand, capsys, monkeypatch):
    out = _help(main, [subcommand, "--help"], capsys, monkeypatch)
    assert _flat(SUBCOMMANDS[subcommand][0]) in _flat(out)
    assert not any(text in _flat(out) for text in FOREIGN)
    assert len(out.splitlines()) < 300


def test_version(capsys, monkeypatch):
    out = _help(main, ["--version"], capsys, monkeypatch)
    assert out == f"resemb-pl {resemb_pl.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", resemb_pl.__version__)
    # The package's metadata reads the same attribute: one place sets the version.
    project = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert not re.search(r"^version =", project, re.M)
    assert '[tool.hatch.version]\npath = "resemb_pl/__init__.py"' in project


def test_export_help_names_its_command_and_describes_every_subcommand(capsys, monkeypatch):
    out = _help(export_main, ["--help"], capsys, monkeypatch)
    assert out.startswith("usage: resemb-pl-export ")
    assert "python -m" not in out
    for name, description in COMMANDS.items():
        sub = _help(export_main, [name, "--help"], capsys, monkeypatch)
        assert sub.startswith(f"usage: resemb-pl-export {name} ")
        assert _flat(description) in _flat(sub)
        assert all(line.strip() for line in sub.split("options:")[1].splitlines()[2:])


def test_pretrain_help_describes_the_command_and_every_method(capsys, monkeypatch):
    flat = _flat(_help(pretrain_main, ["--help"], capsys, monkeypatch))
    assert "Pretrain an item table" in flat
    for method, tag in (("skipgram", "+Skip:"), ("node2vec", "+n2v:"), ("sms", "+sms:")):
        out = _help(pretrain_main, [method, "--help"], capsys, monkeypatch)
        assert tag in out
        assert len(out.splitlines()) < 200


def test_first_sentence():
    assert cli_help.first_sentence("Stop here.  Disabled by\n default.") == "Stop here."
    assert cli_help.first_sentence("Defaults to ``None``. If ``True``, load weights.") == (
        "If ``True``, load weights.")
    assert cli_help.first_sentence("Devices, e.g. 2 or i.e. all. More.") == (
        "Devices, e.g. 2 or i.e. all.")
    assert cli_help.first_sentence("No full stop") == "No full stop"
    assert cli_help.first_sentence("Version 1.5 is out. Yes.") == "Version 1.5 is out."


def test_shorten_subclasses():
    names = ["torch.optim.Adam", "resemb_pl.optim.RowAdam", "torch.optim.SGD",
             "torch_geometric.nn.lr_scheduler.X", "my_module.MyOpt"]
    assert cli_help.shorten_subclasses(names) == (
        "resemb_pl.optim.RowAdam, my_module.MyOpt and 2 from torch, 1 from torch_geometric")
    assert cli_help.shorten_subclasses(["lightning.A", "lightning.B"]) == "2 from lightning"
    assert cli_help.shorten_subclasses(["resemb_pl.A"]) == "resemb_pl.A"


USER_MODULE = '''
import torch
from torch import nn

from resemb_pl.nn.embedding import PlainEmbedding
from resemb_pl.nn.models import CTRBackbone


class SumPool(CTRBackbone):
    def __init__(self, embedding, num_categories: int, scale: float = 1.0) -> None:
        super().__init__(embedding, num_categories)
        self.out = nn.Linear(2 * self.dim, 1)
        self.scale = scale

    def score(self, hist, target, mask):
        pooled = (hist * mask.unsqueeze(-1)).sum(1)
        return self.scale * self.out(torch.cat([pooled, target], -1)).squeeze(-1)


class Doubled(PlainEmbedding):
    def forward(self, ids):
        return 2 * super().forward(ids)
'''


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_user_subclasses_by_class_path_train(tmp_path, monkeypatch):
    (tmp_path / "user_backbone.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--data.preset=tiny",
          "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
          "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
          "--model.backbone.class_path=user_backbone.SumPool",
          "--model.backbone.init_args.scale=0.5",
          "--model.embedding.class_path=user_backbone.Doubled"])
    (ckpt,) = (tmp_path / "runs").rglob("last.ckpt")
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["backbone"] == {"class_path": "user_backbone.SumPool",
                                   "init_args": {"scale": 0.5}}
    assert hparams["embedding"]["class_path"] == "user_backbone.Doubled"


def test_a_backbone_that_is_not_a_ctr_backbone_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--data.preset=tiny",
              "--model.backbone=torch.nn.ReLU"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("resemb-pl: error:")]
    assert len(err) == 1
    assert "model.backbone" in err[0]
    assert "CTRBackbone" in err[0]


def test_top_level_help_names_compare_which_has_its_own_help(capsys, monkeypatch):
    out = _flat(_help(main, ["--help"], capsys, monkeypatch))
    assert "`resemb-pl compare --help`" in out
    out = _flat(_help(main, ["compare", "--help"], capsys, monkeypatch))
    assert out.startswith("usage: resemb-pl compare")
    for option in ("--data", "--models", "--seeds", "--out"):
        assert option in out
