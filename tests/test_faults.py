"""Nothing lost: a full disk under the cache, the logger's folder, predict's output or an export
leaves the earlier files whole and readable, no temporary behind, and the command ends with one
line and exit code 2; generated failures of atomic writes do the same."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resemb_pl import atomic
from resemb_pl.atomic import atomic_folder, atomic_open, sweep_abandoned
from resemb_pl.cli import main as cli_main
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.export import ItemTable
from resemb_pl.export import main as export_main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


# -- a small disk that fills up -------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs mounted for the test (root only; skipped where mounting is refused)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0:
        pytest.skip("filling a disk needs a tmpfs mount, which needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        # lazily: memory maps of the test's data modules may still be open
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` with a file of zeros until it is full, then free ``leave`` bytes."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    chunk = b"\0" * (1 << 16)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    size = (disk / "filler").stat().st_size
    os.truncate(disk / "filler", max(0, size - leave))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the filler), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "filler"}


def temporaries(folder: Path) -> list[str]:
    """Temporary files or folders of an atomic write, anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if atomic._TEMP.match(p.name)]


def fails_in_one_line(capsys, command, args: list[str], prog: str) -> str:
    """Run a command's ``main``; assert exit 2 and one error line, no traceback; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        command(args)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: ")
    return line


# -- the four places ------------------------------------------------------------------------
def test_full_disk_under_the_cache(small_disk, tmp_path, capsys, monkeypatch):
    cache = small_disk / "cache"
    CTRDataModule(preset="tiny", cache_dir=str(cache)).prepare_data()
    before = snapshot(small_disk)
    fill(small_disk, leave=16 << 10)  # room for a few of the new cache's files, not all

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    line = fails_in_one_line(capsys, cli_main, [
        "fit", f"--config={QUICKSTART}", "--data.preset=tiny", f"--data.cache_dir={cache}",
        "--data.top_k=4", "--trainer.max_steps=1", *QUIET], "resemb-pl")
    assert "No space left on device" in line
    after = snapshot(small_disk)
    new = sorted(after.keys() - before.keys())
    assert len(new) == 1
    assert new[0].endswith(".lock")  # the new cache's (empty) lock file
    assert {k: after[k] for k in before} == before
    assert temporaries(small_disk) == []
    dm = CTRDataModule(preset="tiny", cache_dir=str(cache))  # the earlier cache still reads
    assert dm.num_items == 400
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1


def test_full_disk_under_the_logger_folder(small_disk, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(small_disk)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    args = ["fit", f"--config={QUICKSTART}", "--data.preset=tiny",
            f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
            "--trainer.logger.init_args.version=0", *QUIET]
    cli_main(args)
    run = small_disk / "runs" / "quickstart" / "version_0"
    checkpoints = sorted((run / "checkpoints").iterdir())
    assert [p.name for p in checkpoints if p.name == "last.ckpt"] == ["last.ckpt"]
    before = snapshot(run / "checkpoints")
    fill(small_disk, leave=64 << 10)  # the run starts, its checkpoint cannot be written

    line = fails_in_one_line(capsys, cli_main, args, "resemb-pl")
    assert "No space left on device" in line
    assert snapshot(run / "checkpoints") == before
    assert temporaries(small_disk) == []
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "state_dict" in last


def test_full_disk_under_predict_output(small_disk, quickstart_checkpoint, tmp_path, capsys,
                                        monkeypatch):
    q = quickstart_checkpoint
    ckpt = torch.load(q.ckpt, weights_only=True)
    hparams = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if k[0] != "_"}
    dm = CTRDataModule(**hparams | {"cache_dir": q.cache})
    s, vocab = dm.samples("test"), dm.catalogue.item_vocab
    requests = tmp_path / "requests.parquet"
    pd.DataFrame({"history": [list(vocab[s.history(i) - 1]) for i in range(len(s))],
                  "item_id": vocab[s.target - 1]}).to_parquet(requests)
    output = small_disk / "predictions.parquet"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    args = ["predict", f"--ckpt_path={q.ckpt}", f"--data.path={requests}",
            f"--data.output={output}", *QUIET]
    cli_main(args)
    before = snapshot(small_disk)
    scores = pd.read_parquet(output)["probability"].to_numpy()
    assert len(scores) == len(s)
    fill(small_disk, leave=min(4096, output.stat().st_size // 2))

    line = fails_in_one_line(capsys, cli_main, args, "resemb-pl")
    assert "No space left on device" in line
    assert snapshot(small_disk) == before
    assert temporaries(small_disk) == []
    np.testing.assert_array_equal(pd.read_parquet(output)["probability"].to_numpy(), scores)


def test_full_disk_under_an_export(small_disk, quickstart_checkpoint, capsys):
    out = small_disk / "export"
    export_main(["embeddings", f"--ckpt_path={quickstart_checkpoint.ckpt}", f"--out={out}"])
    export_main(["model", f"--ckpt_path={quickstart_checkpoint.ckpt}", f"--out={out}",
                 "--no_onnx"])
    before = snapshot(small_disk)
    table = ItemTable.load(out)
    fill(small_disk, leave=32 << 10)  # a few of the export's files fit, not all

    for command in (["embeddings", "--projector_items=100"], ["model", "--no_onnx"]):
        line = fails_in_one_line(capsys, export_main, [
            *command, f"--ckpt_path={quickstart_checkpoint.ckpt}", f"--out={out}"],
            "resemb-pl-export")
        assert "No space left on device" in line
        assert snapshot(small_disk) == before
        assert temporaries(small_disk) == []
    np.testing.assert_array_equal(ItemTable.load(out).embedding, table.embedding)
    assert torch.export.load(out / "model.pt2") is not None


# -- generated failures of atomic writes ----------------------------------------------------
class Failure(Exception):
    pass


def write_chunks(fh, data, chunks: list[int], fail_at: int | None) -> None:
    """Write ``data`` in chunks of the given sizes (cycled), raising after ``fail_at`` bytes."""
    done, i = 0, 0
    while done < len(data):
        if fail_at is not None and done >= fail_at:
            raise Failure
        step = min(chunks[i % len(chunks)], len(data) - done)
        if fail_at is not None:
            step = min(step, fail_at - done) or step
        fh.write(data[done : done + step])
        done, i = done + step, i + 1
    if fail_at is not None:
        raise Failure  # fails after the last byte, before the file is closed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=st.one_of(st.none(), st.binary(max_size=3000)), new=st.binary(max_size=3000),
       text=st.booleans(), chunks=st.lists(st.integers(1, 700), min_size=1, max_size=8),
       fail_at=st.one_of(st.none(), st.integers(0, 3000)), fsync=st.booleans())
def test_atomic_open_keeps_the_old_file_whole(old, new, text, chunks, fail_at, fsync):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.bin"
        if old is not None:
            path.write_bytes(old)
        data = new.decode("latin-1") if text else new
        mode = "w" if text else "wb"
        kwargs = {"encoding": "latin-1", "newline": ""} if text else {}
        try:
            with atomic_open(path, mode, fsync=fsync, **kwargs) as fh:
                write_chunks(fh, data, chunks, fail_at)
        except Failure:
            assert fail_at is not None
            if old is None:
                assert not path.exists()
            else:
                assert path.read_bytes() == old
        else:
            assert fail_at is None
            assert path.read_bytes() == new
        assert sorted(os.listdir(folder)) == (["out.bin"] if path.exists() else [])


names = st.sampled_from(["a.npy", "b.parquet", "c", "d.txt", "sub"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=st.one_of(st.none(), st.dictionaries(names, st.binary(max_size=500), max_size=5)),
       new=st.dictionaries(names, st.binary(max_size=500), max_size=5),
       fail_after=st.one_of(st.none(), st.integers(0, 5)),
       owned=st.sets(names))
def test_atomic_folder_is_replaced_whole_or_not_at_all(old, new, fail_after, owned):
    with tempfile.TemporaryDirectory() as parent:
        path = Path(parent) / "export"
        if old is not None:
            path.mkdir()
            for name, data in old.items():
                (path / name).write_bytes(data)
        before = snapshot(path) if old is not None else None
        try:
            with atomic_folder(path, keep=lambda name: name not in owned) as tmp:
                for n, (name, data) in enumerate(new.items()):
                    if fail_after is not None and n >= fail_after:
                        raise Failure
                    (tmp / name).write_bytes(data)
                if fail_after is not None:
                    raise Failure
        except Failure:
            assert fail_after is not None
            assert (snapshot(path) if path.exists() else None) == before
        else:
            assert fail_after is None
            kept = {k: v for k, v in (old or {}).items() if k not in owned and k not in new}
            assert snapshot(path) == new | kept
        assert os.listdir(parent) == (["export"] if path.exists() else [])


def test_a_folder_renamed_aside_by_a_killed_writer_is_put_back(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    export = tmp_path / "export"
    aside = tmp_path / f".export.{atomic._HOST}-{pid}.k1ll3d.old"  # killed between the renames
    aside.mkdir()
    (aside / "items.parquet").write_bytes(b"the earlier export")
    new = tmp_path / f".export.{atomic._HOST}-{pid}.k1ll3d.tmp"
    new.mkdir()
    other_host = tmp_path / f".export.elsewhere-{pid}.k1ll3d.tmp"  # another host's: not ours
    other_host.mkdir()

    assert sweep_abandoned(tmp_path) == [new]
    assert (export / "items.parquet").read_bytes() == b"the earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", other_host.name])

    with atomic_open(tmp_path / "x.csv", "w") as fh:  # a live writer keeps its temporary
        (live,) = [p for p in tmp_path.iterdir() if p.name.startswith(".x.csv.")]
        assert atomic.abandoned(tmp_path) == []
        fh.write("done")
    assert not live.exists()
    assert (tmp_path / "x.csv").read_text() == "done"


def test_atomic_folder_refuses_a_file_in_its_place(tmp_path):
    (tmp_path / "export").write_text("a file")
    with pytest.raises(NotADirectoryError), atomic_folder(tmp_path / "export"):
        pass
    assert (tmp_path / "export").read_text() == "a file"
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_write_errors_name_the_file_being_written(tmp_path):
    path = tmp_path / "out.csv"

    def raising(err):
        with atomic_open(path, "w") as fh:
            fh.write("partial")
            raise err

    with pytest.raises(OSError, match="No space left on device") as info:
        raising(OSError(errno.ENOSPC, "No space left on device"))
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(path))
    for other in (ConnectionResetError(errno.ECONNRESET, "reset"), RuntimeError("a bug")):
        with pytest.raises(type(other)) as info:
            raising(other)
        assert info.value is other  # not about the disk (which has room): as it was
    assert os.listdir(tmp_path) == []
