import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RESEMB_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repository; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found: real-data tests need ../shared/data")
    return SHARED_DATA


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
