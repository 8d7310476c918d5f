"""Atomic file writes: a temporary file beside the target, renamed over it on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", *, fsync: bool = False, **kwargs
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` is untouched, so a reader
    never sees a half-written file. The file gets a normal file's mode (``0666`` less the
    umask) rather than ``mkstemp``'s ``0600``, so a cache shared between users stays readable.

    Args:
        path: The file to write.
        mode: ``"wb"`` or ``"w"`` (extra keyword arguments go to :func:`os.fdopen`).
        fsync: Flush the data to disk before the rename (for checkpoints).

    Example::

        with atomic_open("cache.npz") as fh:
            np.savez(fh, x=x)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
