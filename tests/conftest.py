import importlib.util
import logging
import os
import random
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch  # noqa: F401  (configures its loggers at import, before any snapshot)
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RESEMB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repository; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found: real-data tests need ../shared/data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def load_script():
    """``load_script(name)``: ``scripts/<name>.py`` imported as a module (scripts are not a
    package)."""
    def load(name: str):
        path = REPO / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"script_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def quickstart_checkpoint(tmp_path_factory) -> SimpleNamespace:
    """Train ``configs/quickstart.yaml`` on the tiny preset (one epoch, 4 batches) and copy only
    the checkpoint to ``alone/model.ckpt``, as a user would; shared by the predict and export
    tests. ``root`` is the training folder and ``cache`` its data cache."""
    from resemb_pl.cli import main

    root = tmp_path_factory.mktemp("quickstart")
    cache = str(root / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr("sys.argv", ["resemb-pl"])
        main(["fit", f"--config={REPO / 'configs' / 'quickstart.yaml'}", "--data.preset=tiny",
              f"--data.cache_dir={cache}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=4", "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false"])
    alone = root / "alone"
    alone.mkdir()
    shutil.copy(root / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt",
                alone / "model.ckpt")
    return SimpleNamespace(root=root, ckpt=alone / "model.ckpt", cache=cache)


# -- every test starts from the same global state ---------------------------------------------
# The loggers whose handlers, level and propagation the package and Lightning change: the CLI
# gives ``resemb_pl`` a stderr handler and stops its propagation (which would hide its records
# from ``caplog`` in every later test), the report scripts quieten ``lightning.pytorch``.
_LOGGERS = ("resemb_pl", "lightning", "pytorch_lightning")
# Environment variables that the code under test sets by design: Lightning's
# ``seed_everything`` and ``Trainer(deterministic=True)``, and torch.compile's (inductor sets its
# private ones as it loads a compiled kernel). Restored after each test without an error; any
# other variable that a test leaves changed is an error.
_ENV_SET_BY_DESIGN = frozenset({"PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG"})
_ENV_PREFIXES_SET_BY_DESIGN = ("_TORCHINDUCTOR_",)


def _logger_names() -> list[str]:
    names = logging.Logger.manager.loggerDict
    return [n for n in names if n.split(".")[0] in _LOGGERS
            and isinstance(names[n], logging.Logger)]


def _logger_state(logger: logging.Logger) -> tuple:
    return logger.level, list(logger.handlers), logger.propagate, logger.disabled


def _set_logger_state(logger: logging.Logger, state: tuple) -> None:
    logger.level, handlers, logger.propagate, logger.disabled = state
    logger.handlers[:] = handlers


class GlobalState:
    """A snapshot of the process-wide state that a test can change and a later test would
    see: the working directory, ``os.environ``, ``sys.argv``, torch's thread count, default
    dtype, grad mode and float32 matmul precision, the deterministic-algorithms flag, the RNG
    states (python ``random``, numpy's global generator, torch's CPU and, once initialised, CUDA
    generators) and the handlers, levels and propagation of the ``resemb_pl`` and Lightning
    loggers.

    :meth:`restore` puts all of it back and returns the changes that the test itself should
    have undone (a ``chdir``, ``setenv``, ``set_num_threads``, ... outside ``monkeypatch``).
    Changes that the code under test makes by design are restored without being reported:
    seeding the RNGs, the CLI's log handler (which also stops ``resemb_pl`` records from
    propagating), Lightning's ``Trainer(deterministic=True)`` and the environment variables
    above.

    Example::

        state = GlobalState()
        torch.set_num_threads(1)
        state.restore()  # ["torch.get_num_threads(): 2 -> 1"], and 2 threads again
    """

    def __init__(self) -> None:
        self.values = self._values()
        self.deterministic = (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled())
        self.environ = dict(os.environ)
        self.rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.loggers = {n: _logger_state(logging.getLogger(n)) for n in _logger_names()}

    @staticmethod
    def _values() -> dict:
        return {
            "os.getcwd()": os.getcwd(),
            "sys.argv": list(sys.argv),
            "torch.get_num_threads()": torch.get_num_threads(),
            "torch.get_default_dtype()": torch.get_default_dtype(),
            "torch.is_grad_enabled()": torch.is_grad_enabled(),
            "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision(),
        }

    def restore(self) -> list[str]:
        """Restore the snapshot; return one line per change the test left behind."""
        now = self._values()
        left = [f"{key}: {self.values[key]!r} -> {now[key]!r}"
                for key in self.values if now[key] != self.values[key]]
        os.chdir(self.values["os.getcwd()"])
        sys.argv[:] = self.values["sys.argv"]
        torch.set_num_threads(self.values["torch.get_num_threads()"])
        torch.set_default_dtype(self.values["torch.get_default_dtype()"])
        torch.set_grad_enabled(self.values["torch.is_grad_enabled()"])
        torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        torch.set_float32_matmul_precision(self.values["torch.get_float32_matmul_precision()"])

        for key in sorted(os.environ.keys() | self.environ.keys()):
            before, after = self.environ.get(key), os.environ.get(key)
            if before == after or key == "PYTEST_CURRENT_TEST":  # pytest's own, per phase
                continue
            if key not in _ENV_SET_BY_DESIGN and not key.startswith(_ENV_PREFIXES_SET_BY_DESIGN):
                left.append(f"os.environ[{key!r}]: {before!r} -> {after!r}")
            if before is None:
                del os.environ[key]
            else:
                os.environ[key] = before

        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        torch.set_rng_state(self.rng[2])
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        pristine = (logging.NOTSET, [], True, False)
        for name in _logger_names():  # loggers made during the test go back to pristine
            _set_logger_state(logging.getLogger(name), self.loggers.get(name, pristine))
        return left


_STATE = pytest.StashKey[GlobalState]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    """Snapshot the global state before the test's fixtures (module and session scoped ones
    included, so that what they change is undone as well), then seed the global RNGs with 0:
    a test's unseeded draws do not depend on which tests were collected or ran before it
    (with ``-p randomly``, pytest-randomly then reseeds ``random`` and numpy per test)."""
    item.stash[_STATE] = GlobalState()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """After the test and its fixtures, restore the snapshot; a change the test should have
    undone itself is an error at teardown, so that a new test cannot make others depend on the
    order they run in."""
    state = item.stash.get(_STATE, None)
    try:
        result = yield
    finally:
        left = state.restore() if state is not None else []
    if left:
        pytest.fail(f"{item.nodeid} left global state changed (restored now; use monkeypatch "
                    "or undo it in the test): " + "; ".join(left), pytrace=False)
    return result
