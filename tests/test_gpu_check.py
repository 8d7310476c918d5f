"""scripts/gpu_check.sh (its syntax; `bash scripts/gpu_check.sh --cpu` runs its cases on the CPU,
about 2 minutes, so no test runs it) and the refusal of sparse embeddings under NCCL."""

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from resemb_pl.errors import ConfigError
from resemb_pl.task import CTRTask, check_sparse_strategy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.mark.parametrize(("sparse", "world_size", "backend"), [
    (False, 4, "nccl"),          # dense gradients: NCCL reduces them
    (True, 1, "nccl"),           # one process: nothing to reduce
    (True, 2, "gloo"),           # DDP on CPUs: gloo reduces sparse tensors
    (True, 2, None),             # no process group
])
def test_sparse_strategy_allowed(sparse, world_size, backend):
    check_sparse_strategy(sparse, world_size, backend)


@pytest.mark.parametrize("backend", ["nccl", "cpu:gloo,cuda:nccl"])
def test_sparse_embeddings_refused_under_nccl_in_one_line(backend):
    with pytest.raises(ConfigError) as info:
        check_sparse_strategy(True, 2, backend, rank=0)
    message = str(info.value)
    assert message.startswith("model.sparse_embeddings: NCCL")
    assert "sparse" in message.split(":", 1)[1]
    assert "\n" not in message
    # The other ranks leave quietly with the same exit code, so the user reads one line.
    with pytest.raises(SystemExit) as code:
        check_sparse_strategy(True, 2, backend, rank=1)
    assert code.value.code == 2


def test_task_setup_checks_the_trainers_strategy(monkeypatch):
    task = CTRTask(10, 2, embedding_dim=4, sparse_embeddings=True)
    trainer = SimpleNamespace(world_size=2, global_rank=0, datamodule=None, loggers=[],
                              strategy=SimpleNamespace(process_group_backend="nccl"))
    monkeypatch.setattr(task, "_trainer", trainer)
    with pytest.raises(ConfigError, match="model.sparse_embeddings: NCCL"):
        task.setup("fit")
    trainer.strategy.process_group_backend = "gloo"
    monkeypatch.setattr(task, "_log_readable_hparams", lambda: None)
    task.setup("fit")  # accepted



def test_gpu_check_script_parses():
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
