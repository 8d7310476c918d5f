"""Interrupted training: atomic checkpoints, SIGKILL/SIGTERM mid-epoch, ``--ckpt_path last``.

The subprocess runs train the ``tiny`` preset for two epochs of 14 batches with
``--trainer.deterministic true`` and a checkpoint (with ``last.ckpt``) every 2 training steps.
An interrupted run resumed with ``resemb-pl fit ... --ckpt_path last`` must end with exactly
the weights and validation metrics of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer

from resemb_pl.checkpoint import SafeCheckpointIO, find_last_checkpoint, save_atomic
from resemb_pl.data.datamodule import EpochSampler, ResumableLoader, SampleDataset
from resemb_pl.data.protocols import Samples

_SCRIPT = Path(sys.executable).with_name("resemb-pl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "resemb_pl.cli"]
MODEL = Path(__file__).resolve().parents[1] / "configs" / "model" / "din_att.yaml"

RUN_YAML = """\
seed_everything: 42
trainer:
  max_epochs: 2
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: logs, name: run}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 2, save_last: true, save_top_k: 0}
data:
  preset: tiny
  cache_dir: cache
model:
  embedding_dim: 8
"""

# Imported by the subprocess (PYTHONPATH=tmp_path): sends a signal to its own process once
# the given training step has finished (before ModelCheckpoint, which Lightning runs last).
SIGNAL_CALLBACK = """\
import os
from lightning.pytorch import Callback


class SignalAt(Callback):
    def __init__(self, step: int = 0, signum: int = 9) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
"""


def fit(root: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [*COMMAND, "fit", "--config", "run.yaml", "--model", str(MODEL),
         "--trainer.logger.init_args.name", name, *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )


def final_state(root: Path, name: str) -> tuple[dict, pd.Series]:
    """Weights of the newest ``last.ckpt`` of a run and its last validation metrics."""
    versions = sorted((root / "logs" / name).glob("version_*"))
    weights = torch.load(versions[-1] / "checkpoints" / "last.ckpt", weights_only=True)
    metrics = pd.read_csv(versions[-1] / "metrics.csv").dropna(subset=["val/auc"])
    return weights["state_dict"], metrics.iloc[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    (root / "run.yaml").write_text(RUN_YAML)
    (root / "signal_at.py").write_text(SIGNAL_CALLBACK)
    return root


@pytest.fixture(scope="module")
def uninterrupted(workdir) -> tuple[dict, pd.Series]:
    result = fit(workdir, "full")
    assert result.returncode == 0, result.stderr[-3000:]
    return final_state(workdir, "full")


def assert_same_end(resumed: tuple[dict, pd.Series], full: tuple[dict, pd.Series]) -> None:
    weights, metrics = resumed
    assert weights.keys() == full[0].keys()
    for key, value in full[0].items():
        assert torch.equal(weights[key], value), key
    assert metrics["epoch"] == full[1]["epoch"] == 1
    assert metrics["step"] == full[1]["step"] == 27
    for key in ("val/auc", "val/gauc", "val/logloss"):
        assert metrics[key] == full[1][key], key


@pytest.mark.parametrize(
    ("signum", "step", "code"),
    [(signal.SIGKILL, 19, -signal.SIGKILL), (signal.SIGTERM, 9, 143)],
    ids=["sigkill", "sigterm"],
)
def test_interrupted_run_resumes_to_the_same_end(workdir, uninterrupted, signum, step, code):
    name = f"cut_{signum}"
    cut = fit(workdir, name, "--trainer.callbacks+=signal_at.SignalAt",
              f"--trainer.callbacks.step={step}", f"--trainer.callbacks.signum={int(signum)}")
    assert cut.returncode == code, cut.stderr[-3000:]
    assert "Traceback" not in cut.stderr
    last = workdir / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    # SIGKILL: the checkpoint of step 18 (every 2 steps); SIGTERM: saved at step 9 on the way out.
    assert saved["global_step"] == (18 if signum == signal.SIGKILL else 9)
    assert saved["epoch"] == (1 if signum == signal.SIGKILL else 0)  # mid-epoch either way
    assert not list(last.parent.glob("*.tmp"))
    if signum == signal.SIGTERM:
        saved = last.relative_to(workdir)
        assert f"stopped by SIGTERM; saved {saved}; resume with --ckpt_path last" in cut.stderr

    resumed = fit(workdir, name, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last.relative_to(workdir)}" in (
        resumed.stderr + resumed.stdout
    )
    assert "not resumable" not in resumed.stderr
    assert_same_end(final_state(workdir, name), uninterrupted)


# -- the pieces, in process ----------------------------------------------------------------------
def dataset(n: int = 23) -> SampleDataset:
    seq = np.arange(1, n + 1)
    samples = Samples(seq, np.zeros(n, np.int64), np.ones(n, np.int64), seq.copy(),
                      np.ones(n, np.float32), np.arange(n))
    return SampleDataset(samples, np.zeros(n + 1, np.int64))


def loader() -> ResumableLoader:
    return ResumableLoader(dataset(), batch_size=4, seed=0, collate_fn=lambda batch: batch)


def targets(loader) -> list[list[int]]:
    return [batch["target"].tolist() for batch in loader]


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(50, seed=3)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(1)
    assert list(sampler) == first
    assert sorted(first) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(EpochSampler(50, seed=4)) != first


def test_resumable_loader_skips_the_batches_already_trained():
    full = loader()
    full.sampler.set_epoch(2)
    expected = targets(full)
    assert len(expected) == 6

    cut = loader()
    cut.sampler.set_epoch(2)
    iterator = iter(cut)
    seen = [next(iterator)["target"].tolist() for _ in range(4)]
    state = cut.state_dict()
    assert state == {"epoch": 2, "batches": 4}

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    assert seen + targets(resumed) == expected
    assert targets(resumed) == expected  # only the resumed epoch is shortened

    other_epoch = loader()
    other_epoch.load_state_dict(state)
    other_epoch.sampler.set_epoch(3)  # a checkpoint at an epoch's end resumes the next epoch
    assert len(targets(other_epoch)) == 6


def test_save_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    save_atomic({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"step": 2, "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert path.stat().st_mode & 0o644 == 0o644


def test_cli_trainer_uses_safe_checkpoint_io(tmp_path, monkeypatch):
    from resemb_pl.cli import ResembCLI
    from resemb_pl.data.datamodule import CTRDataModule
    from resemb_pl.task import CTRTask

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    cli = ResembCLI(CTRTask, CTRDataModule, run=False, auto_configure_optimizers=False,
                    args=["--data.preset", "tiny", "--data.cache_dir", "cache",
                          "--trainer.logger", "false"])
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_find_last_checkpoint_looks_across_logger_versions(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    old = tmp_path / "logs" / "run" / "version_0" / "checkpoints"
    old.mkdir(parents=True)
    (old / "last.ckpt").write_bytes(b"x")
    (old / "epoch0.ckpt").write_bytes(b"x")
    trainer = Trainer(logger=CSVLogger(tmp_path / "logs", name="run"),
                      callbacks=[ModelCheckpoint(save_last=True)], default_root_dir=tmp_path)
    assert find_last_checkpoint(trainer) == str(old / "last.ckpt")
    fixed = tmp_path / "fixed"
    trainer = Trainer(logger=False, callbacks=[ModelCheckpoint(dirpath=fixed, save_last=True)])
    assert find_last_checkpoint(trainer) is None
