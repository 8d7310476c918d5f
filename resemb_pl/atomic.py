"""Atomic writes: every file and folder the package writes appears whole or not at all.

A file is written to a temporary file beside it and renamed over it; a folder (an export, a data
cache) is written as a temporary folder beside it and swapped in by two renames. A failure (a
full disk, an exception, Ctrl-C) removes the temporary file or folder and leaves the earlier one
as it was.

Temporary names carry the writer's host and process id, ``.<name>.<host>-<pid>.<random>.tmp``,
so a temporary left by a killed process (SIGKILL, power loss) is recognisable as abandoned once
that process is gone: :func:`sweep_abandoned` removes such leftovers, and every write sweeps
the leftovers of its own target first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
# .<name>.<host>-<pid>.<random>.tmp (a file or folder being written) or .old (a folder being
# replaced); mkstemp's random part is made of letters, digits and underscores.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+"
                   r"\.(?P<kind>tmp|old)$")


def _prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", *, fsync: bool = False, **kwargs
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block succeeds.

    If the block raises (or the disk fills while the file is closed), the temporary file is
    removed and ``path`` is untouched, so a reader never sees a half-written file. The file gets
    a normal file's mode (``0666`` less the umask) rather than ``mkstemp``'s ``0600``, so a
    cache shared between users stays readable. The block gets the file wrapped so that writes
    after a failure are dropped (see :class:`_GuardedFile`); a full disk is an ``OSError``
    ``ENOSPC`` naming ``path``, whatever the writer raised.

    Args:
        path: The file to write.
        mode: ``"wb"`` or ``"w"`` (extra keyword arguments go to :func:`os.fdopen`).
        fsync: Flush the data and the rename to disk (for checkpoints).

    Example::

        with atomic_open("predictions.parquet") as fh:
            frame.to_parquet(fh)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp")
    try:
        try:
            fh = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            raise
        guarded = _GuardedFile(fh)
        with fh:
            try:
                yield guarded
            except BaseException:
                guarded.failed = True
                raise
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        explained = _explain(err, path, tmp)  # before the temporary frees its space
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if explained is not None:
            raise explained from err
        raise
    if fsync:
        _fsync_folder(path.parent)


class _GuardedFile:
    """The file :func:`atomic_open` yields: once a write or the block has failed, its writes
    are dropped instead of raising again.

    A serialiser that tries to finish its output again after a failure (a C++ destructor, where
    a second error would abort the process) writes into the void: the temporary file is deleted
    anyway. Writes go through Python's ``write``, so numpy, too, reports a full disk with its
    errno rather than as ``"400 requested and 47 written"``. Every other attribute is the
    file's.
    """

    def __init__(self, fh: IO) -> None:
        self._fh, self.failed = fh, False

    def write(self, data):
        if self.failed:
            return len(data)
        try:
            return self._fh.write(data)
        except BaseException:
            self.failed = True
            raise

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.failed:
            self._fh.flush()

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __iter__(self):
        return iter(self._fh)


def atomic_write(
    path: str | Path, write: Callable[[IO], object], mode: str = "wb", *, fsync: bool = False,
    **kwargs
) -> Path:
    """Write ``path`` with ``write(fh)`` through :func:`atomic_open`; return ``path``.

    Example::

        atomic_write("items.parquet", lambda fh: frame.to_parquet(fh, index=False))
        atomic_write("fig.png", lambda fh: fig.savefig(fh, format="png"))
    """
    with atomic_open(path, mode, fsync=fsync, **kwargs) as fh:
        write(fh)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(
    path: str | Path, *, keep: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole.

    The old folder (if any) is renamed aside, the new one renamed into place, and the old one
    deleted, so ``path`` holds either the whole old content or the whole new content. If the
    block raises, the temporary folder is deleted and ``path`` is untouched.

    Args:
        path: The folder to write. An existing file there is an error (``NotADirectoryError``).
        keep: Entries of the old folder to carry into the new one (as hard links where the file
            system allows, else copies) when the block did not write an entry of that name:
            ``keep(name)`` is true for them. ``None`` carries nothing.

    Example::

        with atomic_folder("export", keep=lambda name: name not in ("items.parquet",)) as tmp:
            frame.to_parquet(tmp / "items.parquet")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    sweep_abandoned(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        if keep is not None and path.is_dir():
            for entry in os.scandir(path):
                if keep(entry.name) and not (tmp / entry.name).exists():
                    _carry(Path(entry.path), tmp / entry.name)
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, path)
    except BaseException as err:
        explained = _explain(err, path, tmp)  # before the temporary frees its space
        shutil.rmtree(tmp, ignore_errors=True)
        if explained is not None:
            raise explained from err
        raise


def _explain(err: BaseException, path: Path, tmp: str | Path) -> OSError | None:
    """A failed write as an ``OSError`` that names ``path``, or ``None`` to keep ``err``.

    Writers report a full disk in their own ways: numpy as ``OSError("400 requested and 47
    written")`` without an errno, torch's serialisers as a ``RuntimeError``. Such an error,
    raised while the disk under ``path`` is full, becomes ``[Errno 28] No space left on device:
    '<path>'``. An ``OSError`` with an errno gets ``path`` as its file name when it names none
    or the temporary.
    """
    tmp = str(tmp)
    if isinstance(err, OSError) and err.errno is not None:
        name = err.filename
        if err.errno not in _WRITE_ERRORS:
            return None
        if name is None or str(name) == tmp or str(name).startswith(tmp + os.sep):
            name = str(path) + ("" if name is None else str(name)[len(tmp):])
            return OSError(err.errno, err.strerror, name)
        return None
    if isinstance(err, (OSError, RuntimeError)) and _disk_full(path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def _disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has (next to) no room left for this user."""
    try:
        st = os.statvfs(folder)
    except (AttributeError, OSError):  # no statvfs (Windows)
        try:
            return shutil.disk_usage(folder).free < _FULL
        except OSError:
            return False
    root = getattr(os, "geteuid", lambda: 1)() == 0
    return (st.f_bfree if root else st.f_bavail) * st.f_frsize < _FULL


_FULL = 1 << 20  # a failed write leaves less than a buffer's worth free
# errnos of writing a file: such an error without a file name is about the file being written
_WRITE_ERRORS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS", "EACCES", "EPERM") if hasattr(errno, name))


def _carry(src: Path, dst: Path) -> None:
    """Hard-link (or copy) a file or a folder tree ``src`` to ``dst``."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        link(str(src), str(dst))


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``, moving an existing ``path`` aside first and deleting it after."""
    if not path.is_dir():
        os.rename(tmp, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".old"))
    os.rmdir(old)  # a unique name for the old folder
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot sync a directory
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running (in doubt: yes)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        try:
            import psutil
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def abandoned(folder: str | Path, name: str | None = None) -> list[Path]:
    """Temporary files and folders in ``folder`` whose writer (on this host) is gone.

    Args:
        folder: Where to look (not recursively).
        name: Only the temporaries of the target ``name``; ``None`` for every target.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, not a folder, or not listable: nothing to sweep
        return []
    found = []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if (match is None or match["host"] != _HOST or (name is not None and match["name"] != name)
                or _alive(int(match["pid"]))):
            continue
        found.append(Path(entry.path))
    return found


def sweep_abandoned(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder``; return what was removed.

    A folder that a killed writer had renamed aside to replace it (``.old``) is renamed back
    when its target is missing, otherwise deleted. Temporaries of live writers, and of other
    hosts sharing the folder, are left alone. Call it where no writer of the same target can
    be running (under the target's lock) or rely on the process ids: a writer that is alive
    keeps its temporaries.

    Args:
        folder: The folder to clean (not recursively).
        name: Only the temporaries of the target ``name``; ``None`` for every target.
    """
    removed = []
    for temp in abandoned(folder, name):
        match = _TEMP.match(temp.name)
        target = temp.parent / match["name"]
        try:
            if match["kind"] == "old" and not os.path.lexists(target):
                os.rename(temp, target)
                continue
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp)
            else:
                os.unlink(temp)
        except OSError:  # swept by another process first, or not ours to remove
            continue
        removed.append(temp)
    return removed
