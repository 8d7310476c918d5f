"""Interrupted training: atomic checkpoints, SIGKILL/SIGTERM/SIGINT, ``--ckpt_path last``.

The subprocess runs train the ``tiny`` preset for two epochs of 14 batches (each followed by a
validation of 10 batches) with ``--trainer.deterministic true`` and a checkpoint (with
``last.ckpt``) every 2 training steps. A run interrupted in training, in validation or while a
checkpoint is written, resumed with ``resemb-pl fit ... --ckpt_path last``, must end with
exactly the weights and validation metrics of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer

from resemb_pl.checkpoint import (
    Interrupted,
    PreemptionCheckpoint,
    SafeCheckpointIO,
    find_last_checkpoint,
    save_atomic,
)
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
  eval_batch_size: 64
model:
  embedding_dim: 8
"""

# Imported by the subprocess (PYTHONPATH=tmp_path): callbacks that send signals to their own
# process at a chosen moment.
SIGNAL_CALLBACK = """\
import os

import torch
from lightning.pytorch import Callback

import resemb_pl.checkpoint
from resemb_pl.atomic import atomic_open


class SignalAt(Callback):
    \"\"\"Sends ``signum`` ``times`` times once training step ``step`` has finished (before
    ModelCheckpoint, which Lightning runs last), or, with ``val_batch`` >= 0, after that batch
    of the validation that follows step ``step``.\"\"\"

    def __init__(self, step: int = 0, signum: int = 9, val_batch: int = -1, times: int = 1):
        self.step, self.signum, self.val_batch, self.times = step, signum, val_batch, times

    def send(self):
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, *args):
        if self.val_batch < 0 and trainer.global_step == self.step:
            self.send()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if (not trainer.sanity_checking and trainer.global_step == self.step
                and batch_idx == self.val_batch):
            self.send()


class SignalInSave(Callback):
    \"\"\"From training step ``step`` on, sends ``signum`` in the middle of every checkpoint
    write (the file written, not yet renamed into place), and prints the file's name.\"\"\"

    def __init__(self, step: int = 0, signum: int = 15):
        self.step, self.signum, self.trainer = step, signum, None

        def save_atomic(obj, path):
            with atomic_open(path, fsync=True) as fh:
                torch.save(obj, fh)
                if self.trainer is not None and self.trainer.global_step >= self.step:
                    os.kill(os.getpid(), self.signum)
                    print(f"signalled while writing {path}", flush=True)

        resemb_pl.checkpoint.save_atomic = save_atomic

    def setup(self, trainer, *args, **kwargs):
        self.trainer = trainer


class SignalAtSetup(Callback):
    \"\"\"Sends ``signum`` in ``setup``, before any training.\"\"\"

    def __init__(self, signum: int = 15):
        self.signum = signum

    def setup(self, trainer, *args, **kwargs):
        os.kill(os.getpid(), self.signum)
"""


def fit(root: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*COMMAND, "fit", "--config", "run.yaml", "--model", str(MODEL),
         "--trainer.logger.init_args.name", name, *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )


def final_state(root: Path, name: str) -> tuple[dict, pd.DataFrame]:
    """Weights of the newest ``last.ckpt`` of a run and the validation metrics that all its
    versions logged, in order."""
    versions = sorted((root / "logs" / name).glob("version_*"))
    weights = torch.load(versions[-1] / "checkpoints" / "last.ckpt", weights_only=True)
    logged = [pd.read_csv(v / "metrics.csv") for v in versions if (v / "metrics.csv").is_file()]
    metrics = pd.concat([m.dropna(subset=["val/auc"]) for m in logged if "val/auc" in m])
    columns = ["epoch", "step", "val/auc", "val/gauc", "val/logloss"]
    return weights["state_dict"], metrics[columns].reset_index(drop=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    (root / "run.yaml").write_text(RUN_YAML)
    (root / "signal_at.py").write_text(SIGNAL_CALLBACK)
    return root


@pytest.fixture(scope="module")
def uninterrupted(workdir) -> tuple[dict, pd.DataFrame]:
    result = fit(workdir, "full")
    assert result.returncode == 0, result.stderr[-3000:]
    return final_state(workdir, "full")


def assert_same_end(resumed: tuple[dict, pd.DataFrame], full: tuple[dict, pd.DataFrame]) -> None:
    weights, metrics = resumed
    assert weights.keys() == full[0].keys()
    for key, value in full[0].items():
        assert torch.equal(weights[key], value), key
    # every validation ran once, over the same weights (an interrupted one again, in full)
    assert metrics["epoch"].tolist() == full[1]["epoch"].tolist() == [0, 1]
    assert metrics["step"].tolist() == full[1]["step"].tolist() == [13, 27]
    pd.testing.assert_frame_equal(metrics, full[1], check_exact=True)


NOT_RUN = {"ready": 1, "started": 1, "processed": 0, "completed": 0}


@pytest.mark.parametrize(
    ("callback", "code", "saved_at"),
    [
        # SIGKILL: the periodic checkpoint of step 18 (every 2 steps) remains.
        (["SignalAt", "step=19", "signum=9"], -signal.SIGKILL, (18, 1)),
        # In training, saved at the end of the batch, mid-epoch. SIGTERM arrives while
        # ModelCheckpoint writes last.ckpt at step 6, and again while the checkpoint on the way
        # out is written: both writes finish. SIGINT: Ctrl-C pressed twice.
        (["SignalInSave", "step=6", "signum=15"], 143, (6, 0)),
        (["SignalAt", "step=5", "signum=2", "times=2"], 130, (5, 0)),
        # In validation (10 batches): the state of the training batch before it, with the
        # validation marked as not run (it runs again, whole, when resumed).
        (["SignalAt", "step=14", "signum=15", "val_batch=1"], 143, (14, 0)),
        (["SignalAt", "step=28", "signum=2", "val_batch=2"], 130, (28, 1)),
    ],
    ids=["sigkill", "sigterm-while-saving", "sigint-twice", "sigterm-validation",
         "sigint-validation"],
)
def test_interrupted_run_resumes_to_the_same_end(
    workdir, uninterrupted, request, callback, code, saved_at
):
    name = f"cut_{request.node.callspec.id}"
    cls, *settings = callback
    cut = fit(workdir, name, f"--trainer.callbacks+=signal_at.{cls}",
              *(f"--trainer.callbacks.{setting}" for setting in settings))
    assert cut.returncode == code, cut.stderr[-3000:]
    assert "Traceback" not in cut.stderr
    last = workdir / "logs" / name / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["global_step"], saved["epoch"]) == saved_at
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no temporary left
    progress = saved["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    assert (progress["current"] == NOT_RUN) == ("val_batch" in str(callback))
    if code > 0:
        what = signal.Signals(code - 128).name
        assert cut.stderr.strip().splitlines()[-1] == (
            f"resemb-pl: stopped by {what}; saved {last.relative_to(workdir)}; "
            "resume with --ckpt_path last"
        )
    if cls == "SignalInSave":
        assert cut.stdout.count(f"signalled while writing {last.relative_to(workdir)}") == 2

    resumed = fit(workdir, name, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last.relative_to(workdir)}" in (
        resumed.stderr + resumed.stdout
    )
    assert "not resumable" not in resumed.stderr
    assert_same_end(final_state(workdir, name), uninterrupted)


def test_a_signal_before_training_stops_at_once_with_nothing_to_save(workdir):
    name = "setup"
    cut = fit(workdir, name, "--trainer.callbacks+=signal_at.SignalAtSetup",
              f"--trainer.callbacks.signum={int(signal.SIGTERM)}")
    assert cut.returncode == 143, cut.stderr[-3000:]
    assert "Traceback" not in cut.stderr
    assert cut.stderr.strip().splitlines()[-1] == (
        "resemb-pl: stopped by SIGTERM before any training step; nothing to save"
    )
    assert not list((workdir / "logs" / name).rglob("*.ckpt"))


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


def test_a_signal_before_training_raises_at_once_and_a_second_one_is_ignored():
    preemption = PreemptionCheckpoint()
    before = signal.getsignal(signal.SIGINT)
    preemption.catch_signals()
    try:
        with pytest.raises(Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # while stopping: ignored, nothing raised
    finally:
        preemption.release_signals()
    assert stopped.value.code == preemption.exit_code == 130
    assert preemption.summary() == "stopped by SIGINT before any training step; nothing to save"
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_in_training_asks_lightning_to_stop_at_its_next_safe_point():
    preemption = PreemptionCheckpoint()
    connector = SimpleNamespace(received_sigterm=False)
    trainer = SimpleNamespace(world_size=1, _signal_connector=connector)
    preemption.catch_signals()
    try:
        preemption.on_train_start(trainer, None)
        os.kill(os.getpid(), signal.SIGTERM)  # nothing raised: the loops stop themselves
        assert connector.received_sigterm
        with pytest.raises(Interrupted) as stopped:  # the validation after the batch
            preemption.on_validation_start(trainer, None)
    finally:
        preemption.release_signals()
    assert stopped.value.code == 143
    preemption.on_train_end(trainer, None)  # a stop that came as training ended
    assert preemption.summary() == "stopped by SIGTERM after training finished; nothing to resume"
