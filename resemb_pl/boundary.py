"""The one error boundary of every command: a user's mistake is one line on stderr and exit 2.

Every entry point (``resemb-pl``, ``resemb-pl-export``, ``python -m resemb_pl.pretrain``, the
experiment scripts) runs inside :class:`command_boundary`. It maps exceptions *by class* to
``<prog>: error: <what>: <why>`` and exit code 2, without a traceback:

- :class:`~resemb_pl.errors.ResembError` (bad data, configuration or checkpoint);
- :class:`argparse.ArgumentError` (also jsonargparse's): a bad command line;
- :class:`OSError`: a missing, unreadable or read-only path, a full disk, a folder where a file is
  needed; the message names ``err.filename``;
- Lightning's ``MisconfigurationException``: a Trainer setting that cannot work here (e.g.
  ``accelerator="gpu"`` without one);
- :class:`ValueError` and :class:`TypeError` raised by the argument checks of a
  ``torch.optim`` optimizer or scheduler or of a ``torch.utils.data`` loader (their
  constructors), e.g. a negative learning rate.

Any other exception, a :class:`ValueError` from our own code included, is a bug: it goes through
with its traceback.

Example::

    @command_boundary("resemb-pl")
    def main(args: list[str] | None = None) -> None:
        ...
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException

from resemb_pl.errors import ConfigError, ResembError

# Errors that say what the user got wrong, whatever their message.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ResembError,
    argparse.ArgumentError,
    OSError,
    MisconfigurationException,
)
# Libraries whose constructors check their arguments with ValueError / TypeError.
_ARGUMENT_CHECKS = (("torch", "optim"), ("torch", "utils", "data"))


def _innermost_frame(err: BaseException):
    tb = err.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


def raising_class(err: BaseException) -> str | None:
    """The class whose ``__init__`` raised ``err`` (its innermost frame), or ``None``."""
    frame = _innermost_frame(err)
    if frame is None or frame.f_code.co_name != "__init__":
        return None
    owner = frame.f_locals.get("self")
    return type(owner).__name__ if owner is not None else None


def argument_check(err: BaseException) -> str | None:
    """The class whose constructor refused its arguments with ``err``, or ``None``.

    Only a :class:`ValueError` or :class:`TypeError` raised in an ``__init__`` of
    ``torch.optim`` (optimizers, schedulers) or ``torch.utils.data`` (loaders, samplers)
    counts: those are checks of the values a user configured.
    """
    if not isinstance(err, (ValueError, TypeError)):
        return None
    frame = _innermost_frame(err)
    if frame is None:
        return None
    parts = Path(frame.f_code.co_filename).parts
    if not any(
        parts[i : i + len(pkg)] == pkg for pkg in _ARGUMENT_CHECKS for i in range(len(parts))
    ):
        return None
    return raising_class(err)


def raised_in_package(err: BaseException) -> bool:
    """Whether ``err`` was raised by the code of :mod:`resemb_pl` itself."""
    frame = _innermost_frame(err)
    package = Path(__file__).resolve().parent
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(package)


def is_user_error(err: BaseException) -> bool:
    """Whether the command boundary reports ``err`` in one line (see the module's docstring)."""
    return isinstance(err, USER_ERRORS) or argument_check(err) is not None


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks of any kind included) one space."""
    return " ".join(str(text).split())


def describe_error(err: BaseException) -> str:
    """``<what>: <why>`` of a user error, on one line.

    An :class:`OSError` names its file(s) and the system's reason; a refused optimizer or loader
    argument names the class; an error without a message is named by its class.
    """
    if isinstance(err, OSError) and err.filename is not None:
        where = str(err.filename)
        if err.filename2 is not None:
            where += f" -> {err.filename2}"
        why = err.strerror or type(err).__name__
        return one_line(f"{where}: {why}")
    message = one_line(str(err)) or f"{type(err).__name__} (no message)"
    if isinstance(err, USER_ERRORS):
        return message
    return f"{argument_check(err)}: {message}"


def report(prog: str, err: BaseException) -> NoReturn:
    """Print ``<prog>: error: <what>: <why>`` on stderr and exit with code 2."""
    line = f"{prog}: error: {describe_error(err)}"
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        line = line.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        line = line.encode("ascii", "backslashreplace").decode("ascii")
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(2) from None


class command_boundary(contextlib.ContextDecorator):  # noqa: N801 - used like a function
    """Report a user error raised inside in one line and exit 2; let every other one through.

    Use as a decorator on an entry point's ``main`` or as a ``with`` block around it.

    Args:
        prog: The command's name, the line's prefix (``resemb-pl``).

    Example::

        with command_boundary("resemb-pl-export"):
            export(args)
    """

    def __init__(self, prog: str) -> None:
        self.prog = prog
        #: The error last reported (and turned into exit code 2), if any.
        self.reported: BaseException | None = None

    def __enter__(self) -> command_boundary:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if err is None or not is_user_error(err):
            return False
        self.reported = err
        report(self.prog, err)


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors raise, for :class:`command_boundary`.

    argparse prints the usage and exits on a bad command line; this one raises a
    :class:`~resemb_pl.errors.ConfigError` with argparse's message instead, so the boundary
    reports it in one line. ``--help`` still prints and exits 0.
    """

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

