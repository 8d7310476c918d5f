"""Reading input files: one-line errors naming the file, whatever the parser raises."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from resemb_pl.errors import DataError

# What reading a damaged, truncated or misformatted file can raise.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, pa.ArrowException)
#: The columns a reader of a ratings file names them.
RATING_COLUMNS = ["user", "item", "rating", "timestamp"]


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (its class name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def existing(path: str | Path) -> Path:
    """``path`` as a Path; a DataError naming it if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return path


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn the errors of reading ``path`` into a one-line :class:`DataError`."""
    try:
        yield
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from exc


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` with its errors as one-line DataErrors naming the file."""
    with reading(path):
        return pd.read_csv(path, **kwargs)
