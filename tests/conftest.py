from pathlib import Path

import pytest
import os

SHARED_DATA = Path(os.environ.get("RESEMB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shared_data() -> Path:
    """The real data folder beside the repository; skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found: real-data tests need ../shared/data")
    return SHARED_DATA
