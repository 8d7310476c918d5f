"""The processed-data cache: a folder of memory-mapped ``.npy`` files, keyed by the parameters
and the inputs, built once under a lock, readable read-only, rebuilt when damaged."""

from __future__ import annotations

import contextlib
import functools
import json
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

from resemb_pl import atomic
from resemb_pl.data import cache
from resemb_pl.data.datamodule import CACHE_VERSION, CTRDataModule
from resemb_pl.errors import ConfigError, DataError
from resemb_pl.nn import ResEmbedding
from resemb_pl.nn.conv import GCNNormConv
from resemb_pl.task import CTRTask

REPO = Path(__file__).resolve().parents[1]


def build(tmp_path, **kwargs) -> CTRDataModule:
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.prepare_data()
    return dm


def cache_folder(tmp_path) -> Path:
    (folder,) = (p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    return folder


def leftovers(folder: Path) -> list[str]:
    """Everything in a cache folder but the caches and their lock files."""
    return sorted(p.name for p in folder.iterdir()
                  if not p.name.endswith(".lock") and not (p.is_dir() and p.name[0] != "."))


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def arrays_of(dm: CTRDataModule) -> dict:
    """The processed data as the cache stores it: named arrays."""
    return dm.processed.to_arrays()


def assert_same_arrays(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def events_csv(path: Path, users: int = 30) -> Path:
    rows = [(u, i, 1, t) for u in range(users) for t, i in enumerate(np.arange(5) + u % 7 + 1)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "timestamp"]).to_csv(path)
    return path


def test_cache_is_a_folder_of_memory_maps_and_is_reused(tmp_path, caplog):
    first = arrays_of(build(tmp_path))
    folder = cache_folder(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"] == CACHE_VERSION
    assert set(meta["arrays"]) == set(first)
    # The splits share one history array: it is stored once.
    assert meta["arrays"]["val.seq"]["file"] == meta["arrays"]["train.seq"]["file"]
    assert len(list(folder.glob("*.npy"))) < len(meta["arrays"])
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    with caplog.at_level("INFO"):
        again = arrays_of(build(tmp_path))
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    assert not warnings_of(caplog)
    assert any("reusing processed data" in r.getMessage() for r in caplog.records)
    assert_same_arrays(first, again)
    for name, array in again.items():
        assert isinstance(array, np.memmap) == (array.ndim > 0), name
    assert again["train.seq"] is again["test.seq"]
    assert again["catalogue.item_vocab"].dtype.kind == "U"  # strings without pickle


def test_cached_arrays_are_read_only_maps_and_torch_gets_copies(tmp_path, monkeypatch):
    build(tmp_path)
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"), batch_size=32)
    target = dm.processed.train.target
    assert isinstance(target, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        target[0] = 1
    for copy in (dm.item_category, dm.item_domain, dm.graph.edge_index.numpy()):
        assert copy.flags.writeable
        copy[...] = 0  # never reaches the cache
    assert dm.catalogue.item_category.any()
    assert dm.processed.edge_index.any()

    # Everything a fit does hands torch writable arrays: a tensor on a read-only map would
    # write into it (a segmentation fault) the moment something changes it in place.
    def refuse_read_only(convert):
        def checked(data, *args, **kwargs):
            if isinstance(data, np.ndarray):
                assert data.flags.writeable, "a read-only array went to torch"
            return convert(data, *args, **kwargs)

        return checked

    monkeypatch.setattr(torch, "from_numpy", refuse_read_only(torch.from_numpy))
    monkeypatch.setattr(torch, "as_tensor", refuse_read_only(torch.as_tensor))
    task = CTRTask(dm.num_items, dm.num_categories, embedding_dim=6,
                   embedding=functools.partial(ResEmbedding, conv=GCNNormConv))
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, dm)
    trainer.test(task, dm)
    assert task.catalogue == dm.catalogue


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "missing_file",
                                    "garbage_meta", "wrong_shape"])
def test_damaged_cache_is_reported_and_rebuilt(tmp_path, caplog, damage):
    original = {k: np.array(v) for k, v in arrays_of(build(tmp_path)).items()}
    folder = cache_folder(tmp_path)
    file = folder / "train.target.npy"
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "garbage_header":
        file.write_bytes(b"not an npy file" + file.read_bytes()[15:])
    elif damage == "missing_file":
        file.unlink()
    elif damage == "garbage_meta":
        (folder / "meta.json").write_text("{not json")
    else:
        np.save(file, np.zeros(3, dtype=np.int64))

    with caplog.at_level("WARNING"):
        rebuilt = arrays_of(build(tmp_path))
    (message,) = warnings_of(caplog)
    assert message.startswith(f"cache {folder} is unreadable (")
    assert message.endswith("; rebuilding it")
    assert "\n" not in message
    assert_same_arrays(rebuilt, original)
    assert cache_folder(tmp_path) == folder
    np.testing.assert_array_equal(np.load(file), original["train.target"])  # whole again
    assert leftovers(tmp_path / "cache") == []


def test_cache_of_another_version_is_rebuilt(tmp_path, caplog):
    original = {k: np.array(v) for k, v in arrays_of(build(tmp_path)).items()}
    folder = cache_folder(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"] = CACHE_VERSION + 1
    (folder / "meta.json").write_text(json.dumps(meta))

    with caplog.at_level("WARNING"):
        rebuilt = arrays_of(build(tmp_path))
    assert warnings_of(caplog) == [
        f"cache {folder} was written by another version; rebuilding it"]
    assert_same_arrays(rebuilt, original)
    assert json.loads((folder / "meta.json").read_text())["version"] == CACHE_VERSION


def test_an_old_npz_cache_is_not_found(tmp_path, monkeypatch):
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    old = tmp_path / "cache" / f"synthetic-{dm.fingerprint()}.npz"
    np.savez(old, num_items=np.int64(3), cache_version=np.int64(1))
    calls = []
    process = CTRDataModule.process
    monkeypatch.setattr(CTRDataModule, "process", lambda self: calls.append(1) or process(self))
    assert dm.num_items == 400
    assert calls == [1]
    assert old.exists()  # left alone


def test_failed_processing_leaves_no_cache(tmp_path):
    with pytest.raises(DataError, match="fewer than data.top_k=100000"):
        build(tmp_path, top_k=100000)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_interrupted_cache_write_leaves_no_folder(tmp_path, monkeypatch):
    real, calls = np.save, []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # a few arrays written, then Ctrl-C
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


KILLED_WRITER = """
import sys, time
import numpy as np
from resemb_pl.data.datamodule import CTRDataModule

real = np.save
def save(*args, **kwargs):
    real(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(600)

np.save = save
CTRDataModule(preset="tiny", cache_dir=sys.argv[1]).prepare_data()
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_temp_folder_of_a_killed_writer_is_swept(tmp_path):
    cache = tmp_path / "cache"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(cache)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (temp,) = [p for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert temp.is_dir()
    assert temp.name.endswith(".tmp")
    assert f"-{child.pid}." in temp.name  # the writer's process id
    assert atomic.abandoned(cache) == [temp]

    # A temporary of a live process (this one) is not abandoned and stays.
    live = cache / f".other.{atomic._HOST}-{os.getpid()}.abc123.tmp"
    live.mkdir()
    dm = build(tmp_path)
    assert not temp.exists()
    assert live.exists()
    assert dm.num_items == 400
    assert leftovers(cache) == [live.name]


def test_key_hashes_small_inputs_by_content_and_large_ones_by_size_and_time(tmp_path,
                                                                            monkeypatch):
    path = events_csv(tmp_path / "events.csv")
    dm = CTRDataModule(source="interactions", path=str(path), cache_dir=str(tmp_path / "c"))
    key = dm.fingerprint()
    stat_key, content = key.split("-")
    assert len(stat_key) == len(content) == 16

    def edit_keeping_size_and_time():
        st = path.stat()
        path.write_text(path.read_text().replace("\n1,", "\n2,", 1))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert path.stat().st_size == st.st_size

    edit_keeping_size_and_time()
    assert dm.fingerprint() != key  # small: the content counts

    monkeypatch.setattr(cache, "CONTENT_HASH_LIMIT", 10)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(f) or real_open(f, *a,
                                                                                          **k))
    big = dm.fingerprint()
    assert "-" not in big
    edit_keeping_size_and_time()
    assert dm.fingerprint() == big  # large: not read, only sizes and times
    assert str(path) not in map(str, opened)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert dm.fingerprint() != big


def test_key_covers_processing_parameters_only():
    key = CTRDataModule(preset="tiny").fingerprint()
    assert CTRDataModule(preset="tiny", top_k=4).fingerprint() != key
    assert CTRDataModule(preset="tiny", seed=1).fingerprint() != key
    same = [CTRDataModule(preset="tiny", batch_size=7, eval_batch_size=9, num_workers=1,
                          cache_dir="elsewhere", output="x.parquet")]
    assert {dm.fingerprint() for dm in same} == {key}


def test_other_ranks_find_the_cache_without_hashing_the_inputs(tmp_path, monkeypatch):
    path = events_csv(tmp_path / "events.csv")
    kwargs = {"source": "interactions", "path": str(path), "cache_dir": str(tmp_path / "c"),
              "top_k": 2}
    CTRDataModule(**kwargs).prepare_data()  # the first process hashes and builds

    hashed = []
    content_key = cache.content_key
    monkeypatch.setattr(cache, "content_key",
                        lambda *a: hashed.append(1) or content_key(*a))
    monkeypatch.setenv("LOCAL_RANK", "1")
    other = CTRDataModule(**kwargs)
    assert other.num_items > 0
    assert hashed == []

    # Two caches for the same sizes and times (content changed, times restored): hash.
    st = path.stat()
    path.write_text(path.read_text().replace("\n1,", "\n2,", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setenv("LOCAL_RANK", "0")
    CTRDataModule(**kwargs).prepare_data()
    assert len(hashed) == 1
    monkeypatch.setenv("LOCAL_RANK", "1")
    CTRDataModule(**kwargs).prepare_data()
    assert len(hashed) == 2


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "parts"
    folder.mkdir()
    events_csv(folder / "part-0.csv")
    os.mkfifo(folder / "part-1.csv")

    def handler(signum, frame):
        raise TimeoutError("the data module blocked reading a FIFO")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(20)
    try:
        for path, kind in [(fifo, "a FIFO"), ("/dev/zero", "a character device"),
                           (folder, "a FIFO")]:
            named = folder / "part-1.csv" if path == folder else path
            for cache in (str(tmp_path / "cache"), None):
                dm = CTRDataModule(source="interactions", path=str(path), cache_dir=cache)
                with pytest.raises(DataError) as info:
                    dm.prepare_data()
                assert str(info.value) == (
                    f"{named}: is {kind}, not a regular file or a folder of them")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    missing = CTRDataModule(source="interactions", path=str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="nope.csv: no such file or directory"):
        missing.prepare_data()


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only for this process: a read-only bind mount as root (root
    ignores permissions), its permissions otherwise."""
    if getattr(os, "geteuid", lambda: 1)() == 0:
        mount = subprocess.run(["mount", "--bind", str(folder), str(folder)],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.skip(f"a read-only folder needs a bind mount as root: {mount.stderr.strip()}")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
            yield
        finally:
            # lazily: the memory maps of the test's data modules may still be open
            subprocess.run(["umount", "--lazy", str(folder)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def test_read_only_cache(tmp_path, caplog):
    original = {k: np.array(v) for k, v in arrays_of(build(tmp_path)).items()}
    cache = tmp_path / "cache"
    for lock in cache.glob("*.lock"):
        lock.unlink()  # a cache copied elsewhere, without the lock files
    with read_only(cache):
        with caplog.at_level("INFO"):
            dm = build(tmp_path)
            dm.setup("fit")
            assert_same_arrays(arrays_of(dm), original)
            next(iter(dm.train_dataloader()))
        with pytest.raises(ConfigError) as info:
            build(tmp_path, top_k=4)  # not in the cache: would need building
    assert str(info.value) == (
        f"data.cache_dir: {cache} holds no complete cache for these data and is not writable "
        "(Read-only file system); point it at a writable folder, or set it to null"
    ) or str(info.value) == (
        f"data.cache_dir: {cache} holds no complete cache for these data and is not writable "
        "(Permission denied); point it at a writable folder, or set it to null"
    )
    assert sorted(p.name for p in cache.iterdir()) == [cache_folder(tmp_path).name]


def test_no_fcntl_in_the_package():
    """The package imports on Windows: file locks come from filelock, not fcntl."""
    import ast

    for file in (REPO / "resemb_pl").rglob("*.py"):
        tree = ast.parse(file.read_text(), str(file))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            assert "fcntl" not in names, f"{file} imports fcntl"
    assert cache.FileLock.__module__.startswith("filelock")
