"""The trainer's checkpoints: written atomically, loaded safely, saved when a run is pre-empted.

- :class:`SafeCheckpointIO`: the trainer's checkpoint I/O. It writes to a temporary file in the
  target folder, flushes it to disk and renames it over the target, so a run killed while
  saving leaves the previous checkpoint intact. It loads with ``torch.load(weights_only=True)``
  only, so a checkpoint that would run code when unpickled is refused.
- :class:`PreemptionCheckpoint`: on SIGTERM or SIGINT, saves a resumable ``last.ckpt`` at the
  next safe point of training and stops the run (:class:`Interrupted`, exit ``128 + signum``).
- :func:`find_last_checkpoint`: the newest ``last*.ckpt`` of a run, across logger versions, for
  ``resemb-pl fit --ckpt_path last``.

Loading and checking a checkpoint file that may not be trusted (:func:`load_checkpoint`,
:func:`check_checkpoint`, :func:`check_compatible`) lives in :mod:`resemb_pl.safe_load`; they are
importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from resemb_pl.atomic import atomic_open
from resemb_pl.safe_load import (
    _first_sentence,
    check_checkpoint,
    check_compatible,
    load_checkpoint,
)

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "PreemptionCheckpoint",
    "SafeCheckpointIO",
    "check_checkpoint",
    "check_compatible",
    "find_last_checkpoint",
    "load_checkpoint",
    "save_atomic",
]

log = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    with atomic_open(path, fsync=True) as fh:
        torch.save(obj, fh)


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes and ``weights_only=True`` reads for local paths.

    Example::

        trainer = Trainer(plugins=[SafeCheckpointIO()])
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = "cpu", weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            log.warning("%s: loading with weights_only=True regardless of the request", path)
        return load_checkpoint(path, map_location=map_location,
                               required=("pytorch-lightning_version",))


class Interrupted(SIGTERMException):
    """Stops a run on SIGTERM or SIGINT; uncaught, the process exits with ``128 + signum``.

    A subclass of Lightning's ``SIGTERMException`` (a ``SystemExit``), so ``except Exception``
    does not swallow it and Lightning hands it to the callbacks' ``on_exception``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionCheckpoint(Callback):
    """On SIGTERM or SIGINT during ``fit``, save a resumable ``last.ckpt`` and stop.

    Once training has started, a signal does not interrupt anything: it asks the loops to stop
    at the next point where their state is whole, and this callback then writes ``last.ckpt``
    of every ``ModelCheckpoint(save_last=True)`` (or ``<log_dir>/checkpoints/last.ckpt``), for
    ``resemb-pl fit ... --ckpt_path last``. So a checkpoint being written when the signal
    arrives is finished first, and further signals are ignored until the run has stopped (a
    second Ctrl-C cannot break the save). The stop comes

    - in training, at the end of the current batch: the run resumes at the next batch;
    - in validation, after the current validation batch: the checkpoint holds the state at
      the end of the last training batch and marks the validation as not yet run, so the
      resumed run runs it again, whole, then trains on;
    - before training starts (data preparation, loading a checkpoint, the sanity check):
      at once (with :meth:`catch_signals`), with nothing to save; the same command starts
      the run again as it was;
    - once the last epoch has ended: nothing is stopped; :meth:`raise_if_signalled` reports
      the signal after ``fit`` returns.

    With several processes (DDP) the ranks agree at the end of every training batch whether
    any of them was signalled (a max-reduce of one number); all of them then stop at the same
    point and rank 0 alone writes the file. A signal that arrives during a validation is acted
    on at the next training batch, since ranks may hold different numbers of validation
    batches.

    Lightning installs its own SIGTERM handler when ``fit`` starts; this callback replaces it
    (and the SIGINT handler, which would raise ``KeyboardInterrupt`` anywhere) from
    ``on_train_start``, and Lightning puts back the earlier handlers when ``fit`` ends.
    :meth:`catch_signals` handles both signals for a whole command (``resemb-pl``), before
    training too.

    Example::

        preemption = PreemptionCheckpoint()
        trainer = Trainer(callbacks=[preemption, ModelCheckpoint(save_last=True)])
        preemption.catch_signals()
        try:
            trainer.fit(model, datamodule)
            preemption.raise_if_signalled()
        except SIGTERMException:  # Lightning's, or Interrupted
            print(preemption.summary())  # stopped by SIGINT; saved .../last.ckpt; resume ...
        finally:
            preemption.release_signals()
    """

    def __init__(self) -> None:
        #: Checkpoints written on the way out.
        self.saved: list[str] = []
        #: ``(path, why)`` of checkpoints that could not be written.
        self.failed: list[tuple[str, str]] = []
        #: The first SIGTERM or SIGINT received (or agreed on by the ranks), else ``None``.
        self.signum: int | None = None
        self._trainer: Trainer | None = None  # set while fit trains: signals stop it gracefully
        self._finished = False
        self._agreed = False
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    # -- signals ---------------------------------------------------------------------------
    def catch_signals(self) -> None:
        """Handle SIGTERM and SIGINT from now on, until :meth:`release_signals`.

        Before training starts a signal raises :class:`Interrupted` at once; during training
        the run stops at the next safe point (see the class). Outside the main thread signals
        cannot be handled and nothing changes.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._pid = os.getpid()
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._on_signal)
            self._previous.setdefault(signum, signal.SIG_DFL if previous is None else previous)

    def release_signals(self) -> None:
        """Put back the handlers that :meth:`catch_signals` replaced."""
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def raise_if_signalled(self) -> None:
        """Raise :class:`Interrupted` for a signal that came when no safe point was left.

        A signal that arrives as ``fit`` ends (after the last epoch's end) stops nothing.
        """
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid or self.signum is not None:
            # A forked data loader worker (its parent stops the run), or a second signal while
            # stopping: it must not break the checkpoint being written.
            return
        self.signum = signum
        trainer = self._trainer
        if trainer is None:
            raise Interrupted(signum)  # nothing trained yet
        if self.is_global_zero and not self._finished:
            # os.write: a handler must not write through sys.stderr, whose buffer the code it
            # interrupted may be writing to (a reentrant write raises)
            with contextlib.suppress(OSError):
                os.write(2, f"resemb_pl: {signal.Signals(signum).name}: stopping at the end of "
                            "the current batch to save a checkpoint\n".encode())
        if trainer.world_size == 1:
            # Lightning's loops raise SIGTERMException at their next safe point (the end of the
            # batch, of the validation batch, of the epoch) once this flag is set.
            trainer._signal_connector.received_sigterm = True

    @property
    def is_global_zero(self) -> bool:
        """Whether this is the process that reports (rank 0)."""
        return getattr(rank_zero_only, "rank", 0) == 0

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + (self.signum or signal.SIGTERM)

    def summary(self) -> str:
        """One line: the signal, what was saved, and how to resume."""
        name = signal.Signals(self.signum or signal.SIGTERM).name
        if self.saved:
            return f"stopped by {name}; saved {', '.join(self.saved)}; resume with --ckpt_path last"
        if self.failed:
            path, why = self.failed[0]
            return (f"stopped by {name}; could not save {path} ({why}); --ckpt_path last resumes "
                    "from the latest periodic checkpoint")
        if self._finished:
            return f"stopped by {name} after training finished; nothing to resume"
        return f"stopped by {name} before any training step; nothing to save"

    # -- hooks ------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning has installed its SIGTERM handler by now; from here a signal stops training
        # at a safe point instead of raising wherever it lands.
        self._trainer, self._finished, self._agreed = trainer, False, False
        self._install()

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.world_size == 1 or self._agreed:
            return
        # Every rank reaches this point for the same batch: stop all of them together.
        flag = torch.tensor(self.signum or 0, device=trainer.strategy.root_device)
        agreed = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if agreed:
            self.signum, self._agreed = agreed, True
            trainer._signal_connector.received_sigterm = True

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A stop requested during the last training batch: skip the validation, which the
        # resumed run will run instead.
        if self._trainer is not None and self.signum is not None and (
            trainer.world_size == 1 or self._agreed
        ):
            raise Interrupted(self.signum)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finished = True  # a signal from here on stops nothing: it is only recorded

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = None

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        stopping = self._trainer is not None
        self._trainer = None
        if not stopping or not isinstance(exception, SIGTERMException):
            return
        self.signum = self.signum or signal.SIGTERM
        if trainer.validating:
            _rewind_validation(trainer)
        paths = [
            Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
            for cb in trainer.checkpoint_callbacks
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath
        ] or [Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"]
        for path in paths:
            try:
                trainer.save_checkpoint(path, weights_only=False)  # all ranks; rank 0 writes
            except Exception as err:  # reported in the command's one line, not raised
                self.failed.append((str(path), _first_sentence(err)))
                log.error("%s: could not save the checkpoint: %s", path, err)
                continue
            if trainer.is_global_zero:
                self.saved.append(str(path))


def _rewind_validation(trainer: Trainer) -> None:
    """Mark the validation under way as started but not run, for a checkpoint taken in it.

    Training does not change during validation, so the weights, optimizers and training
    counters are those at the end of the last training batch. The validation counters are set
    to "restarted at its first batch": a run resumed from the checkpoint runs the whole
    validation again (Lightning's restart in the middle of an evaluation) and then trains on.
    """
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    before = progress.total.completed - progress.current.completed  # earlier validations
    progress.total.ready = progress.total.started = before + 1
    progress.total.processed = progress.total.completed = before
    progress.current.ready = progress.current.started = 1
    progress.current.processed = progress.current.completed = 0
    progress.is_last_batch = False


def find_last_checkpoint(trainer: Trainer) -> str | None:
    """The newest ``last*.ckpt`` written by this run's configuration, or ``None``.

    Looks in each ``ModelCheckpoint``'s ``dirpath`` where set, else in the ``checkpoints``
    folder of every version of the first logger (a new run gets a new logger version, so
    Lightning's own ``ckpt_path="last"`` would only look in the new, empty one).
    """
    folders: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            folders.append(Path(cb.dirpath))
    if not folders and trainer.loggers:
        root = getattr(trainer.loggers[0], "root_dir", None)
        if root is not None:
            folders.extend(p / "checkpoints" for p in Path(root).glob("*"))
    if not folders:
        folders.append(Path(trainer.default_root_dir) / "checkpoints")
    found = [f for folder in folders for f in folder.glob("last*.ckpt") if f.is_file()]
    return str(max(found, key=lambda f: f.stat().st_mtime)) if found else None
