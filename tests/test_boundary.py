"""One error boundary for every command: a user's mistake is one line on stderr and exit 2.

Part (a) draws exceptions of the classes the boundary maps, with any message, and of classes it
must let through. Part (b) draws bad values for numeric keys and runs the real entry points in
process. Part (c) checks that every console entry point and every script's ``main`` is wrapped,
and part (d) that meaningless values are refused when the objects are built, naming the key.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import importlib.util
import inspect
import io
import os
import re
import sys
from pathlib import Path

import jsonargparse
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightning.fabric.utilities.exceptions import MisconfigurationException

import resemb_pl.pretrain.__main__ as pretrain
from resemb_pl import cli, export
from resemb_pl.boundary import ArgumentParser, command_boundary, describe_error
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import CheckpointError, ConfigError, DataError, ResembError
from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.conv.spmm import spmm
from resemb_pl.nn.layers import MLP
from resemb_pl.nn.models import DIN, WideDeep
from resemb_pl.task import CTRTask

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
# Few examples and no example database: an in-process run of a command takes about a second.
FAST = settings(max_examples=10, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def run_captured(fn, *args) -> tuple[int, str]:
    """``fn(*args)`` with stderr captured: its exit code (0 on return) and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = fn(*args) or 0
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code
    return code, err.getvalue()


def error_lines(stderr: str, prog: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]


def assert_one_line(code: int, stderr: str, prog: str, *words: str) -> str:
    """Exit code 2, no traceback, exactly one ``<prog>: error:`` line, the last one on stderr."""
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    lines = error_lines(stderr, prog)
    assert len(lines) == 1, stderr[-2000:]
    assert stderr.rstrip("\n").splitlines()[-1] == lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_ok_or_one_line(code: int, stderr: str, prog: str) -> None:
    assert code in (0, 2), stderr[-2000:]
    assert "Traceback" not in stderr
    if code == 2:
        assert_one_line(code, stderr, prog)
    else:
        assert error_lines(stderr, prog) == []


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- (a) the boundary itself ---------------------------------------------------------------------
def _argument_error(message: str) -> Exception:
    return argparse.ArgumentError(None, message)


USER_ERRORS = [ResembError, DataError, ConfigError, CheckpointError, _argument_error, OSError,
               FileNotFoundError, PermissionError, IsADirectoryError,
               MisconfigurationException]


@given(make=st.sampled_from(USER_ERRORS), message=st.text())
@settings(max_examples=300, deadline=None, database=None)
def test_boundary_maps_each_user_error_to_one_line(make, message):
    def body():
        with command_boundary("resemb-pl"):
            raise make(message)

    code, stderr = run_captured(body)
    assert code == 2
    assert stderr.endswith("\n")
    (line,) = stderr.splitlines()
    assert line.startswith("resemb-pl: error: ")
    shown = " ".join(message.split())
    assert line == f"resemb-pl: error: {shown}" if shown else line.endswith("(no message)")


@given(number=st.sampled_from([errno.ENOENT, errno.EACCES, errno.ENOSPC, errno.EROFS,
                               errno.EISDIR, errno.ENOTDIR]),
       filename=st.text(min_size=1), filename2=st.none() | st.text(min_size=1))
@settings(max_examples=100, deadline=None, database=None)
def test_boundary_names_the_file_of_an_os_error(number, filename, filename2):
    def body():
        with command_boundary("resemb-pl"):
            raise OSError(number, os.strerror(number), filename, None, filename2)

    code, stderr = run_captured(body)
    (line,) = stderr.splitlines()
    assert code == 2
    assert line.startswith("resemb-pl: error: ")
    assert " ".join(filename.split()) in line
    assert line.endswith(f": {os.strerror(number)}")


@given(kind=st.sampled_from([ValueError, TypeError, RuntimeError, KeyError, AssertionError,
                             ZeroDivisionError, AttributeError, KeyboardInterrupt]),
       message=st.text())
@settings(max_examples=100, deadline=None, database=None)
def test_boundary_lets_other_exceptions_through(kind, message):
    raised = kind(message)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(kind) as info, command_boundary("x"):
        raise raised
    assert info.value is raised
    assert err.getvalue() == ""


def test_boundary_maps_the_argument_checks_of_optimizers_and_loaders_only():
    param = torch.nn.Parameter(torch.zeros(2))
    code, stderr = run_captured(command_boundary("resemb-pl")(torch.optim.Adam), [param], -0.5)
    assert stderr == "resemb-pl: error: Adam: Invalid learning rate: -0.5\n"
    assert code == 2
    loader = command_boundary("resemb-pl")(torch.utils.data.DataLoader)
    code, stderr = run_captured(lambda: loader(range(4), num_workers=-1))
    assert_one_line(code, stderr, "resemb-pl", "DataLoader: num_workers option")
    # The same class of error from elsewhere is a bug: it keeps its traceback.
    optimizer = torch.optim.Adam([param])
    with pytest.raises(ValueError, match="parameter group"), command_boundary("resemb-pl"):
        optimizer.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="reduce must be"), command_boundary("resemb-pl"):
        spmm(torch.zeros(2, 2).to_sparse_csr(), torch.zeros(2, 1), reduce="max")


def test_describe_error_of_an_os_error_with_two_files():
    err = OSError(errno.EXDEV, "Invalid cross-device link", "/a/tmp", None, "/b/out")
    assert describe_error(err) == "/a/tmp -> /b/out: Invalid cross-device link"


def test_argument_parser_raises_instead_of_printing_the_usage():
    parser = ArgumentParser(prog="x")
    parser.add_argument("--k", type=int)
    with pytest.raises(ConfigError, match="argument --k: invalid int value: 'a'"):
        parser.parse_args(["--k", "a"])


# -- (b) bad values through the real entry points ------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One data cache for every run of this module (the tiny preset is built once)."""
    path = tmp_path_factory.mktemp("cache")
    CTRDataModule(preset="tiny", cache_dir=str(path)).prepare_data()
    return str(path)


def junk() -> st.SearchStrategy[str]:
    """Values no numeric key accepts, or accepts only as odd numbers."""
    return st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e-9", "0.5", "-0", "0x10", "",
                            " ", "null", "true", "[1]", "{}", "one", "1_0", "--", "\u2028"]) | (
        st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=6))


def non_positive() -> st.SearchStrategy[str]:
    return st.integers(min_value=-(10**12), max_value=0).map(str)


def negative() -> st.SearchStrategy[str]:
    return st.integers(min_value=-(10**12), max_value=-1).map(str) | st.floats(
        max_value=-1e-12, allow_infinity=True).map(repr)


CLI_VALUES = {
    "--model.embedding_dim": non_positive() | st.integers(1, 6).map(str),
    "--model.optimizer.lr": negative() | st.sampled_from(["0", "0.01"]),
    "--data.batch_size": non_positive() | st.integers(1, 64).map(str),
    "--data.eval_batch_size": non_positive(),
    "--data.num_workers": st.integers(min_value=-(10**12), max_value=-1).map(str),
    "--data.seed": st.integers(min_value=-(10**12), max_value=-1).map(str),
    "--data.max_len": non_positive(),
    "--data.top_k": non_positive(),
    "--trainer.max_epochs": st.integers(min_value=-(10**12), max_value=0).map(str),
}


@given(data=st.data())
@FAST
def test_cli_bad_numeric_values_end_in_one_line(cache, tmp_path, data):
    key = data.draw(st.sampled_from(sorted(CLI_VALUES)))
    value = data.draw(CLI_VALUES[key] | junk())
    args = ["fit", "--data.preset", "tiny", "--data.cache_dir", cache,
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
            "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(tmp_path), key, value]
    assert_ok_or_one_line(*run_captured(cli.main, args), "resemb-pl")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a small task with its vocabulary, as ``resemb-pl fit`` writes it."""
    task = CTRTask(num_items=6, num_categories=2, embedding_dim=4)
    task.attach(Catalogue.from_vocabulary(list("abcdef"), [0, 1, 1, 2, 2, 1, 2], ["x", "y"]))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "resemb_vocab": task.catalogue.to_checkpoint(),
                "pytorch-lightning_version": "2.6.0"}, path)
    return path


@given(k=non_positive() | st.integers(1, 8).map(str) | junk())
@FAST
def test_export_nearest_k(checkpoint, k):
    args = ["nearest", "--source", str(checkpoint), "--item_id", "a", "--k", k]
    code, stderr = run_captured(export.main, args)
    assert_ok_or_one_line(code, stderr, "resemb-pl-export")
    if k.lstrip("-").isdigit() and int(k) < 1:
        assert_one_line(code, stderr, "resemb-pl-export", "--k: must be >= 1")


@given(items=st.integers(min_value=-(10**12), max_value=-1).map(str) | junk())
@settings(max_examples=10, deadline=None, database=None)
def test_export_embeddings_projector_items(checkpoint, tmp_path_factory, items):
    out = tmp_path_factory.mktemp("export")
    args = ["embeddings", "--ckpt_path", str(checkpoint), "--out", str(out),
            "--projector_items", items]
    code, stderr = run_captured(export.main, args)
    assert_ok_or_one_line(code, stderr, "resemb-pl-export")


PRETRAIN_VALUES = {
    "--embedding_dim": non_positive(),
    "--epochs": non_positive(),
    "--window": non_positive(),
    "--batch_size": non_positive(),
    "--num_negatives": non_positive(),
    "--lr": negative(),
    "--seed": st.integers(min_value=-(10**12), max_value=-1).map(str),
    "--data.batch_size": non_positive(),
    "--data.seed": st.integers(min_value=-(10**12), max_value=-1).map(str),
}


@given(data=st.data())
@settings(max_examples=15, deadline=None, database=None)
def test_pretrain_bad_numeric_values_end_in_one_line(cache, tmp_path_factory, data):
    key = data.draw(st.sampled_from(sorted(PRETRAIN_VALUES)))
    value = data.draw(PRETRAIN_VALUES[key] | junk())
    out = tmp_path_factory.mktemp("pretrain") / "emb.npy"
    args = ["skipgram", "--data.preset", "tiny", "--data.cache_dir", cache, "--out", str(out),
            "--epochs", "1", key, value]
    assert_ok_or_one_line(*run_captured(pretrain.main, args), "resemb_pl.pretrain")


# -- (c) every entry point is wrapped ------------------------------------------------------------
FULL_DISK = OSError(errno.ENOSPC, "No space left on device", "/full/disk/out.npy")


def _raise_full_disk(*args, **kwargs):
    raise FULL_DISK


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command name -> ``module:function``."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)[1]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section, re.M))


ENTRY_POINTS = {**console_scripts(), "resemb_pl.pretrain": "resemb_pl.pretrain.__main__:main"}


def test_the_console_scripts_are_found():
    assert {"resemb-pl", "resemb-pl-export"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("prog", sorted(ENTRY_POINTS))
def test_entry_point_reports_an_os_error_while_parsing(monkeypatch, prog):
    module, _, name = ENTRY_POINTS[prog].partition(":")
    main = getattr(importlib.import_module(module), name)
    for parser in (argparse.ArgumentParser, jsonargparse.ArgumentParser):
        monkeypatch.setattr(parser, "parse_args", _raise_full_disk)
        monkeypatch.setattr(parser, "parse_known_args", _raise_full_disk)
    assert_one_line(*run_captured(main, ["fit"]), prog,
                    "/full/disk/out.npy: No space left on device")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_reports_an_os_error(monkeypatch, script):
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", os.environ.get("THP_MEM_ALLOC_ENABLE", "0"))
    module = load_script(script)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", _raise_full_disk)
    takes_argv = bool(inspect.signature(module.main).parameters)
    code, stderr = run_captured(module.main, *([[]] if takes_argv else []))
    line = assert_one_line(code, stderr, script.stem)
    assert line.endswith("/full/disk/out.npy: No space left on device")


def test_os_error_while_training_is_one_line(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(CTRDataModule, "setup", _raise_full_disk)
    args = ["validate", "--data.preset", "tiny", "--data.cache_dir", cache,
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]
    assert_one_line(*run_captured(cli.main, args), "resemb-pl", "/full/disk/out.npy")


def test_os_error_while_exporting_and_pretraining_is_one_line(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(export, "load_task", _raise_full_disk)
    code, stderr = run_captured(export.main, ["model", "--ckpt_path", str(checkpoint),
                                              "--out", str(tmp_path)])
    assert_one_line(code, stderr, "resemb-pl-export", "/full/disk/out.npy")
    monkeypatch.setattr(pretrain, "run", _raise_full_disk)
    code, stderr = run_captured(pretrain.main, ["sms", "--out", str(tmp_path / "e.npy")])
    assert_one_line(code, stderr, "resemb_pl.pretrain", "/full/disk/out.npy")


def test_a_file_where_a_folder_is_needed(cache, checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["validate", "--data.preset", "tiny", "--data.cache_dir", cache,
            "--trainer.default_root_dir", str(blocker / "runs")]
    assert_one_line(*run_captured(cli.main, args), "resemb-pl", str(blocker))
    code, stderr = run_captured(export.main, ["embeddings", "--ckpt_path", str(checkpoint),
                                              "--out", str(blocker)])
    assert_one_line(code, stderr, "resemb-pl-export", str(blocker))


@pytest.mark.parametrize(("args", "words"), [
    (["--trainer.max_epochs", "-2"], ["trainer.max_epochs:", "You passed in -2"]),
    (["--trainer.accelerator", "gpu"], ["trainer.accelerator='gpu'"]),
    (["--model.optimizer.lr", "-1"], ["model.optimizer: Invalid learning rate: -1.0"]),
    (["--data.num_workers", "-1"], ["data.num_workers: must be >= 0, got -1"]),
    (["--data.seed", "-1"], ["data.seed: must be >= 0, got -1"]),
    (["--model.embedding_dim", "0"], ["model.embedding_dim: must be >= 1, got 0"]),
], ids=["max_epochs", "no_gpu", "lr", "num_workers", "seed", "embedding_dim"])
def test_cli_names_the_key(cache, tmp_path, args, words):
    if args[1] == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    base = ["fit", "--data.preset", "tiny", "--data.cache_dir", cache, "--trainer.logger", "false",
            "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path)]
    assert_one_line(*run_captured(cli.main, [*base, *args]), "resemb-pl", *words)


@pytest.mark.parametrize(("args", "words"), [
    (["--accelerator", "gpu"], ["--accelerator gpu --devices 1: No supported gpu backend"]),
    (["--epochs", "0"], ["--epochs: must be >= 1, got 0"]),
    (["--seeds", "0", "-3"], ["--seeds: must be >= 0, got -3"]),
    (["--limit-val-batches", "-1"], ["--limit-val-batches:"]),
    (["--lr", "-0.1"], ["--lr: must be >= 0, got -0.1"]),
], ids=["no_gpu", "epochs", "seed", "limit_val_batches", "lr"])
def test_script_refuses_before_writing_anything(cache, tmp_path, args, words):
    if args[1] == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    table3 = load_script(ROOT / "scripts" / "table3.py")
    argv = ["--data", str(ROOT / "configs" / "data" / "synthetic_tiny.yaml"), "--preset", "tiny",
            "--cache-dir", cache, "--out", str(tmp_path / "reports"), *args]
    assert_one_line(*run_captured(table3.main, argv), "table3", *words)
    assert not (tmp_path / "reports").exists()


def test_export_refuses_k_below_one(checkpoint):
    with pytest.raises(ConfigError, match="k: must be >= 1, got 0"):
        export.nearest(checkpoint, "a", k=0)
    assert list(export.nearest(checkpoint, "a", k=2)["item_id"]) != []


# -- (d) meaningless values are refused when built -----------------------------------------------
@pytest.mark.parametrize(("build", "message"), [
    (lambda: CTRTask(5, 2, embedding_dim=0), "model.embedding_dim: must be >= 1, got 0"),
    (lambda: CTRTask(0, 2), "model.num_items: must be >= 1, got 0"),
    (lambda: CTRTask(5, -1), "model.num_categories: must be >= 0, got -1"),
    (lambda: CTRTask(5, 2, optimizer=lambda p: torch.optim.SGD(p, lr=-1.0)),
     "model.optimizer: Invalid learning rate: -1.0"),
    (lambda: CTRTask(5, 2, lr_scheduler=lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.1, total_steps=0)), "model.lr_scheduler: Expected positive integer"),
    (lambda: PlainEmbedding(5, 0), "model.embedding_dim: must be >= 1, got 0"),
    (lambda: PlainEmbedding(5, 4, l2=-0.1), "model.embedding.l2: must be >= 0, got -0.1"),
    (lambda: ResEmbedding(5, 4, num_layers=0), "model.embedding.num_layers: must be >= 1"),
    (lambda: ResEmbedding(5, 4, residual_l2=float("nan")), "residual_l2: must be >= 0, got nan"),
    (lambda: MeanConv(0, 0), "MeanConv.in_channels: must be >= 1, got 0"),
    (lambda: GCNNormConv(-2, -2), "GCNNormConv.in_channels: must be >= 1, got -2"),
    (lambda: DotAttentionConv(3, 4), "keeps the width"),
    (lambda: MLP(4, [8, 0]), "model.backbone.hidden: every width must be >= 1, got [8, 0]"),
    (lambda: MLP(4, [8], dropout=1.0), "model.backbone.dropout: must lie in [0, 1)"),
    (lambda: DIN(PlainEmbedding(5, 4), 2, attention_hidden=(0,)),
     "model.backbone.attention_hidden: every width must be >= 1"),
    (lambda: WideDeep(PlainEmbedding(5, 4), 2, num_buckets=0), "model.backbone.num_buckets"),
    (lambda: CTRDataModule(num_workers=-2), "data.num_workers: must be >= 0, got -2"),
    (lambda: CTRDataModule(seed=-1), "data.seed: must be >= 0, got -1"),
], ids=["task_dim", "task_items", "task_categories", "lr", "scheduler", "plain_dim", "plain_l2",
        "num_layers", "nan_l2", "mean_conv", "gcn_conv", "width", "mlp_hidden", "dropout",
        "din_attention", "num_buckets", "num_workers", "data_seed"])
def test_meaningless_values_are_refused_with_the_key(build, message):
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)


def test_pyg_heads_must_be_positive():
    from resemb_pl.nn.conv.pyg import GATAdapterConv

    with pytest.raises(ConfigError, match="GATAdapterConv.heads: must be >= 1, got 0"):
        GATAdapterConv(4, 4, heads=0)


def test_the_optimizer_probe_leaves_the_real_optimizer_alone():
    built = []
    task = CTRTask(5, 2, embedding_dim=4,
                   optimizer=lambda p: built.append(torch.optim.Adam(p, lr=0.5)) or built[-1])
    assert len(built) == 1  # the probe, on one parameter of its own
    optimizer = task.configure_optimizers()
    assert optimizer.defaults["lr"] == 0.5
    assert not optimizer.state
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(task.parameters())
