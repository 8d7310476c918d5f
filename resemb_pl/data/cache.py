"""The processed-data cache: its key (a fingerprint of parameters and inputs), lock and files.

A cache is a folder of ``.npy`` files plus ``meta.json``, written whole
(:func:`~resemb_pl.atomic.atomic_folder`) under a lock (:mod:`filelock`, on every platform),
and opened as read-only memory maps, so every process of a run shares one copy.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
from filelock import FileLock

from resemb_pl.atomic import atomic_folder
from resemb_pl.errors import ConfigError, DataError

CACHE_VERSION = 3  # 3: one ProcessedData (catalogue.*, <stage>.*, sequences.*); 2: .npy files
CONTENT_HASH_LIMIT = 64 << 20
"""Inputs smaller than this (bytes, all files together) are hashed by content for the key."""


def content_key(stat_key: str, files: list[tuple[str, Path, os.stat_result]]) -> str:
    """``stat_key``, and the hash of the files' contents when they are small enough."""
    if not files or sum(st.st_size for _, _, st in files) >= CONTENT_HASH_LIMIT:
        return stat_key
    digest = hashlib.sha256()
    for name, file, _ in files:
        digest.update(f"\0{name}\0".encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                digest.update(chunk)
    return f"{stat_key}-{digest.hexdigest()[:16]}"


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, st: os.stat_result) -> DataError:
    kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "a special file")
    return DataError(f"{path}: is {kind}, not a regular file or a folder of them")


def input_files(path: Path) -> list[tuple[str, Path, os.stat_result]]:
    """The regular files of ``path`` (a file, or a folder of them), by name; nothing is read.

    Raises:
        DataError: ``path`` is missing, or it or a file in it is a FIFO, a device or a socket.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory") from None
    if stat.S_ISREG(st.st_mode):
        return [(path.name, path, st)]
    if not stat.S_ISDIR(st.st_mode):
        raise _not_regular(path, st)
    files = []
    for folder, dirs, names in os.walk(path, onerror=_raise):
        dirs.sort()
        for name in sorted(names):
            file = Path(folder, name)
            try:
                st = os.stat(file)
            except FileNotFoundError:
                raise DataError(f"{file}: no such file (a broken link?)") from None
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(file, st)
            files.append((file.relative_to(path).as_posix(), file, st))
    return files


def _raise(err: OSError) -> None:
    raise err


def local_rank(trainer) -> int:
    """This process's rank on its node: the trainer's, else the launcher's (torchrun, SLURM)."""
    if trainer is not None:
        return trainer.local_rank
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


@contextlib.contextmanager
def cache_lock(root: Path, name: str):
    """Hold the lock of cache ``name`` in ``root``; a read-only ``root`` is one ConfigError."""
    lock = FileLock(root / f".{name}.lock")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ConfigError(
            f"data.cache_dir: {root} holds no complete cache for these data and is not "
            f"writable ({err.strerror}); point it at a writable folder, or set it to null"
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_cache(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as one ``.npy`` per array plus ``meta.json``, as a whole folder.

    Strings are stored as fixed-width unicode arrays, loadable without pickle. An array that
    several names share (the splits' common ``seq``) is stored once.
    """
    with atomic_folder(folder) as tmp:
        meta, files = {"version": CACHE_VERSION, "arrays": {}}, {}
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype == object:
                array = array.astype(str)
            if id(value) not in files:
                files[id(value)] = f"{name}.npy"
                np.save(tmp / files[id(value)], array, allow_pickle=False)
            meta["arrays"][name] = {"file": files[id(value)], "dtype": array.dtype.str,
                                    "shape": list(array.shape)}
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh)


def read_cache(folder: Path) -> dict[str, np.ndarray]:
    """Open a cache folder: scalars in memory, every other array memory-mapped read-only.

    Every process maps the same pages, and data larger than memory is paged in as it is read
    (read-only maps are not charged to the memory commit limit, copy-on-write ones would be).
    A numpy write into them raises ``ValueError: assignment destination is read-only``.

    Raises:
        DataError: A file is missing, truncated or not what ``meta.json`` lists, or the cache
            was written by another version.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            raise DataError(f"cache {folder} was written by another version")
        arrays, opened = {}, {}
        for name, info in meta["arrays"].items():
            file = info["file"]
            if file not in opened:
                mode = "r" if info["shape"] else None
                opened[file] = np.load(folder / file, mmap_mode=mode, allow_pickle=False)
            array = opened[file]
            if array.dtype.str != info["dtype"] or list(array.shape) != info["shape"]:
                raise ValueError(f"{file} is not the array meta.json lists")
            arrays[name] = array
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
        raise DataError(f"cache {folder} is unreadable ({type(err).__name__})") from err
    return arrays
