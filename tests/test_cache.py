"""The processed-data cache: a corrupted or foreign cache is reported in one line and rebuilt."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from resemb_pl.data.datamodule import CACHE_VERSION, CTRDataModule
from resemb_pl.errors import DataError


def build(tmp_path, **kwargs) -> CTRDataModule:
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.prepare_data()
    return dm


def cache_file(tmp_path):
    (file,) = (tmp_path / "cache").glob("*.npz")
    return file


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def assert_same_arrays(a: dict, b: dict) -> None:
    keys = a.keys() - {"cache_version"}  # a freshly built dict lacks the cache's version stamp
    assert keys == b.keys() - {"cache_version"}
    for key in keys:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cache_is_reused(tmp_path, caplog):
    first = build(tmp_path).arrays
    stamp = cache_file(tmp_path).stat().st_mtime_ns
    with caplog.at_level("INFO"):
        again = build(tmp_path).arrays
    assert cache_file(tmp_path).stat().st_mtime_ns == stamp
    assert not warnings_of(caplog)
    assert_same_arrays(first, again)


@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "garbage"])
def test_corrupted_cache_is_reported_and_rebuilt(tmp_path, caplog, damage):
    original = build(tmp_path).arrays
    file = cache_file(tmp_path)
    data = bytearray(file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_bytes":
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    else:
        data = bytearray(b"not a zip file at all")
    file.write_bytes(bytes(data))

    with caplog.at_level("WARNING"):
        rebuilt = build(tmp_path).arrays
    (message,) = warnings_of(caplog)
    assert message.startswith(f"cache {file} is unreadable")
    assert message.endswith("; rebuilding it")
    assert "\n" not in message
    assert_same_arrays(rebuilt, original)
    with zipfile.ZipFile(file) as z:
        assert z.testzip() is None  # the file on disk is whole again
    assert [p.name for p in (tmp_path / "cache").glob("*.tmp")] == []


def test_cache_of_another_version_is_rebuilt(tmp_path, caplog):
    original = build(tmp_path).arrays
    file = cache_file(tmp_path)
    with np.load(file) as z:
        arrays = dict(z)
    arrays["cache_version"] = np.int64(CACHE_VERSION + 1)
    arrays.pop("train_seq")
    with open(file, "wb") as fh:
        np.savez(fh, **arrays)

    with caplog.at_level("WARNING"):
        rebuilt = build(tmp_path).arrays
    assert warnings_of(caplog) == [f"cache {file} was written by another version; rebuilding it"]
    assert_same_arrays(rebuilt, original)
    with np.load(file) as z:
        assert int(z["cache_version"]) == CACHE_VERSION


def test_failed_processing_leaves_no_cache(tmp_path):
    with pytest.raises(DataError, match="fewer than data.top_k=100000"):
        build(tmp_path, top_k=100000)
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_interrupted_cache_write_leaves_no_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path)
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert left == []
