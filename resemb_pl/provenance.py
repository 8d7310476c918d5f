"""Which code produced a run: the package version and, from a git checkout, the commit.

Every run records both in its ``config.yaml`` (a comment on the first line) and in its logged
hyperparameters (``version``, ``git_commit``).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from resemb_pl import __version__

_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout the package runs from, ``-dirty`` if files differ from it.

    Empty when the package is not run from a git checkout (an installed wheel) or git is absent.
    """
    if not (_ROOT / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(_ROOT), "status", "--porcelain",
                                  "--untracked-files=no"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}-dirty" if changed else head


def provenance() -> dict[str, str]:
    """``{"version": ..., "git_commit": ...}`` of the running code."""
    return {"version": __version__, "git_commit": git_commit()}


def provenance_line() -> str:
    """One line naming the code: ``resemb_pl 0.1.0, git dd92367...`` (no commit outside git)."""
    commit = git_commit()
    return f"resemb_pl {__version__}" + (f", git {commit}" if commit else "")
