"""Untrusted files: checkpoints load with ``weights_only=True``; code hidden in them never runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from resemb_pl.checkpoint import SafeCheckpointIO, check_compatible, load_checkpoint
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import CheckpointError
from resemb_pl.task import CTRTask

PACKAGE = Path(__file__).resolve().parents[1] / "resemb_pl"
_SCRIPT = Path(sys.executable).with_name("resemb-pl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "resemb_pl.cli"]


class RunsCodeOnLoad:
    """Unpickling this object runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A checkpoint-shaped file whose unpickling would create ``marker``."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_items": 3},
                "payload": RunsCodeOnLoad(marker)}, path)
    return path, marker


def test_the_crafted_checkpoint_does_run_code_when_fully_unpickled(evil_checkpoint):
    path, marker = evil_checkpoint
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


def test_load_checkpoint_refuses_it(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused: it would call posix.system"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        SafeCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()


def test_trainer_refuses_it(tmp_path, evil_checkpoint):
    path, marker = evil_checkpoint
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"))
    task = CTRTask(dm.num_items, dm.num_categories, embedding_dim=4)
    trainer = Trainer(plugins=[SafeCheckpointIO()], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=1)
    with pytest.raises(CheckpointError, match="refused"):
        trainer.validate(task, datamodule=dm, ckpt_path=str(path))
    assert not marker.exists()


def test_lightning_load_from_checkpoint_refuses_it(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(Exception, match="Weights only load failed"):
        CTRTask.load_from_checkpoint(path)
    assert not marker.exists()


def test_command_refuses_it(tmp_path, evil_checkpoint):
    path, marker = evil_checkpoint
    for subcommand in ("fit", "validate"):
        result = subprocess.run(
            [*COMMAND, subcommand, "--data.preset", "tiny", "--data.cache_dir", "cache",
             "--trainer.logger", "false", "--ckpt_path", str(path)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "evil.ckpt: refused: it would call posix.system" in result.stderr
    assert not marker.exists()


def test_no_unsafe_deserialisation_in_the_package():
    for file in PACKAGE.rglob("*.py"):
        text = file.read_text()
        for call in re.findall(r"torch\.load\((.*?)\)\n", text, flags=re.S):
            assert "weights_only=True" in call, f"{file}: torch.load without weights_only=True"
        unsafe = re.search(r"pickle\.loads?\(|(?<![\w.])(eval|exec)\(|allow_pickle=True", text)
        assert unsafe is None, f"{file}: {unsafe and unsafe[0]}"


# -- compatibility of a checkpoint with the model and the data -----------------------------------
def checkpoint_of(task: CTRTask, vocab: list[str] | None = None) -> dict:
    ckpt = {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}
    if vocab is not None:
        ckpt["resemb_vocab"] = {"items": vocab, "categories": []}
    return ckpt


def test_check_compatible_accepts_the_same_model():
    task = CTRTask(5, 2, embedding_dim=4)
    spelled_out = CTRTask(5, 2, embedding_dim=4,
                          embedding={"class_path": "resemb_pl.nn.PlainEmbedding",
                                     "init_args": {"l2": 0.0}})
    vocab = list("abcde")
    check_compatible(checkpoint_of(task, vocab), spelled_out, vocab, "a.ckpt")


def test_check_compatible_names_what_differs():
    task = CTRTask(5, 2, embedding_dim=4)
    vocab = list("abcde")
    res = CTRTask(5, 2, embedding_dim=4, embedding={"class_path": "resemb_pl.nn.ResEmbedding"})
    with pytest.raises(CheckpointError, match=r"a.ckpt: written by another model: model.embedding"):
        check_compatible(checkpoint_of(task), res, None, "a.ckpt")
    with pytest.raises(CheckpointError, match=r"another model: model.embedding_dim is 4 .* 8"):
        check_compatible(checkpoint_of(task), CTRTask(5, 2, embedding_dim=8), None, "a.ckpt")
    with pytest.raises(CheckpointError, match="another item vocabulary: model.num_items is 5"):
        check_compatible(checkpoint_of(task), CTRTask(6, 2, embedding_dim=4), None, "a.ckpt")
    with pytest.raises(CheckpointError, match="another item vocabulary: item 3 is 'c' there but "
                                              "'x' here"):
        check_compatible(checkpoint_of(task, vocab), task, list("abxde"), "a.ckpt")
    foreign = {"state_dict": {"layer.weight": torch.zeros(2)}}
    with pytest.raises(CheckpointError, match="another model: unexpected 'layer.weight'"):
        check_compatible(foreign, task, None, "a.ckpt")


# -- files shaped otherwise than a Lightning checkpoint ------------------------------------------
ODD_CHECKPOINTS = {
    "tensor": (torch.zeros(3), "it holds a Tensor, not a dict with a 'state_dict'"),
    "list": ([1, 2], "it holds a list, not a dict with a 'state_dict'"),
    "bare_state_dict": ({"layer.weight": torch.zeros(2)},
                        "it holds a bare state_dict (tensors only); save a Lightning checkpoint "
                        "with Trainer.save_checkpoint"),
    "no_state_dict": ({"epoch": 3}, "it has no 'state_dict'"),
    "state_dict_list": ({"state_dict": [torch.zeros(2)]},
                        "its 'state_dict' is a list, not a dict of tensors"),
    "state_dict_text": ({"state_dict": {"w": "text"}},
                        "its 'state_dict' entry 'w' is a str, not a tensor"),
    "hparams_list": ({"state_dict": {}, "hyper_parameters": [1]},
                     "its 'hyper_parameters' is a list, not a dict"),
    "vocab_text": ({"state_dict": {}, "resemb_vocab": {"items": "abc", "categories": []}},
                   "its 'resemb_vocab' 'items' is a str, not a list"),
}


@pytest.mark.parametrize("name", sorted(ODD_CHECKPOINTS))
def test_load_checkpoint_refuses_what_is_not_a_lightning_checkpoint(tmp_path, name):
    content, reason = ODD_CHECKPOINTS[name]
    path = tmp_path / f"{name}.ckpt"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: not a Lightning checkpoint: {reason}"


def test_load_checkpoint_names_a_missing_required_key(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {}}, path)
    assert load_checkpoint(path)["hyper_parameters"] == {}
    with pytest.raises(CheckpointError, match="weights.ckpt: .* no 'optimizer_states' to resume"):
        load_checkpoint(path, required=("optimizer_states",))
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="no 'hyper_parameters' to rebuild the model from"):
        load_checkpoint(path, required=("hyper_parameters",))
    with pytest.raises(CheckpointError, match="not written by a Lightning Trainer"):
        SafeCheckpointIO().load_checkpoint(path)


def _one_error_line(capsys, prog: str) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize(("subcommand", "name"), [
    ("fit", "tensor"), ("validate", "list"), ("test", "bare_state_dict"),
    ("predict", "hparams_list"),
])
def test_commands_refuse_an_odd_checkpoint_in_one_line(tmp_path, capsys, subcommand, name):
    from resemb_pl.cli import main

    content, reason = ODD_CHECKPOINTS[name]
    path = tmp_path / f"{name}.ckpt"
    torch.save(content, path)
    with pytest.raises(SystemExit) as info:
        main([subcommand, "--data.preset", "tiny", "--data.cache_dir", str(tmp_path / "cache"),
              "--trainer.logger", "false", "--ckpt_path", str(path)])
    assert info.value.code == 2
    assert _one_error_line(capsys, "resemb-pl") == (
        f"resemb-pl: error: {path}: not a Lightning checkpoint: {reason}")


def test_fit_refuses_to_resume_from_weights_only(tmp_path, capsys):
    from resemb_pl.cli import main

    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"))
    task = CTRTask(dm.num_items, dm.num_categories)
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": task.state_dict(), "pytorch-lightning_version": "2.6.0"}, path)
    with pytest.raises(SystemExit):
        main(["fit", "--data.preset", "tiny", "--data.cache_dir", str(tmp_path / "cache"),
              "--trainer.logger", "false", "--ckpt_path", str(path)])
    assert "weights.ckpt: not a Lightning checkpoint: it has no 'optimizer_states' to resume " \
           "training from" in _one_error_line(capsys, "resemb-pl")


@pytest.mark.parametrize(("command", "name"), [
    ("embeddings", "state_dict_text"), ("nearest", "vocab_text"), ("model", "no_state_dict"),
])
def test_export_refuses_an_odd_checkpoint_in_one_line(tmp_path, capsys, command, name):
    from resemb_pl.export import main

    content, reason = ODD_CHECKPOINTS[name]
    path = tmp_path / f"{name}.ckpt"
    torch.save(content, path)
    where = ["--source", str(path), "--item_id", "a"] if command == "nearest" else [
        "--ckpt_path", str(path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        main([command, *where])
    assert info.value.code == 2
    assert _one_error_line(capsys, "resemb-pl-export") == (
        f"resemb-pl-export: error: {path}: not a Lightning checkpoint: {reason}")
    assert not (tmp_path / "out").exists()
