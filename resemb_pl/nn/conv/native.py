"""Compiled loops over a CSR adjacency, for CPU tensors.

An attention or weighted-sum layer over a batch's in-edges runs, in eager PyTorch, 5-20 ops of
30-80 µs each over a few thousand rows, plus a sort of the edges for the backward pass; the
arithmetic itself is under a million multiply-adds. ``csr_kernels.c`` (beside this file) does
each pass as one loop: the in-edges of some rows (:func:`in_edges`), the backward scatter of a
weighted sum (:func:`scatter`) and of a row lookup (:func:`index_add`), and dot-product
attention forward and backward (:func:`attend_forward`, :func:`attend_backward`). On Amazon
Sports batches the in-edges of a batch's rows, an ATT layer over them and its backward pass
take 2.7 ms instead of 5.6 ms, and no transpose is built.

The C file is compiled once per machine with the C compiler (``$CC``, else ``cc``), about a
second, into ``$RESEMB_PL_NATIVE_DIR`` (default ``~/.cache/resemb_pl/native``, a temporary
folder if that is not writable) under a name that hashes the source and the compiler, written
atomically so that processes starting together do not read a half-written library; it is then
loaded with :mod:`ctypes`. Where no compiler works, the first use warns once and every caller
keeps its eager path: the numbers are the same either way (tests check both against PyG).
``RESEMB_PL_NATIVE=0`` turns the loops off; :func:`disabled` does so within a block.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from resemb_pl.atomic import atomic_open

SOURCE = Path(__file__).with_name("csr_kernels.c")
_FLAGS = ("-O3", "-std=c99", "-fno-math-errno", "-funsafe-math-optimizations")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_OFF = contextvars.ContextVar("resemb_pl_native_off", default=False)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block every caller takes its eager path (for comparisons and tests)."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def usable(*tensors: Tensor | None) -> bool:
    """Whether the loops can run on ``tensors`` (``None`` entries, absent optional arguments,
    are skipped): all on the CPU, the indices int64, the floating ones float32 or float64
    alike, the library built, and the loops not turned off."""
    if _OFF.get() or os.environ.get("RESEMB_PL_NATIVE", "1") == "0":
        return False
    tensors = tuple(t for t in tensors if t is not None)
    if not all(t.device.type == "cpu" and (t.is_floating_point() or t.dtype == torch.long)
               for t in tensors):
        return False
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    return len(dtypes) <= 1 and dtypes <= set(_SUFFIX) and library() is not None


def _cache_dir() -> Path:
    root = os.environ.get("RESEMB_PL_NATIVE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resemb_pl" / "native"


def _fallback_dir() -> Path:  # where the cache folder is not writable
    return Path(tempfile.gettempdir()) / f"resemb_pl-native-{os.getuid()}"


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def _build(target: Path, cc: list[str]) -> None:
    """Compile ``SOURCE`` into ``target`` (written whole or not at all)."""
    with tempfile.TemporaryDirectory() as scratch:
        obj, out = Path(scratch) / "csr_kernels.o", Path(scratch) / target.name
        # Reassociated sums let the 18-wide dot products and the exp loop vectorise (about
        # half the time); infinities and NaNs keep their meaning. Linked in a second step
        # without those flags, so no compiler adds its flush-to-zero start-up code to the
        # library (which would change denormals for the whole process).
        for cmd in ([*cc, *_FLAGS, "-fPIC", "-c", str(SOURCE), "-o", str(obj)],
                    [*cc, "-shared", str(obj), "-o", str(out), "-lm"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0:
                raise OSError(f"{shlex.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb") as fh:
            fh.write(out.read_bytes())


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled loops, built on first use; ``None`` (with one warning) where no C compiler
    can build them."""
    cc = _compiler()
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([*cc, *_FLAGS]).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    name = f"csr_kernels-{key}.so"
    error = None
    for folder in (_cache_dir(), _fallback_dir()):
        target = folder / name
        try:
            if not target.exists():
                _build(target, cc)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as err:
            error = err
            continue
        _declare(lib)
        return lib
    warnings.warn(f"resemb_pl: compiled CSR loops unavailable, using eager PyTorch ({error})",
                  RuntimeWarning, stacklevel=2)
    return None


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.same_items.argtypes = [i64, ptr, i64, ptr, i64, ptr]
    lib.same_items.restype = ctypes.c_int
    for suffix in _SUFFIX.values():
        getattr(lib, f"in_edges_{suffix}").argtypes = [i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
        getattr(lib, f"csr_scatter_{suffix}").argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr]
        getattr(lib, f"index_add_{suffix}").argtypes = [i64, i64, ptr, ptr, ptr]
        getattr(lib, f"attend_forward_{suffix}").argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr,
                                                              ptr]
        getattr(lib, f"attend_backward_{suffix}").argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr,
                                                               ptr, ptr, ptr, ptr]
        for kind in ("in_edges", "index_add", "csr_scatter", "attend_forward", "attend_backward"):
            getattr(lib, f"{kind}_{suffix}").restype = None


def _p(t: Tensor | None) -> int | None:
    """The address of ``t``'s data: the caller must hold ``t`` until the call returns."""
    return None if t is None else t.data_ptr()


def _call(kind: str, dtype: torch.dtype, *args) -> None:
    getattr(library(), f"{kind}_{_SUFFIX[dtype]}")(*args)


def in_edges(rowptr: Tensor, col: Tensor, weight: Tensor | None,
             rows: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """The in-edges of ``rows`` on the CSR graph ``(rowptr, col)`` as a CSR of their own:
    ``(crow, col, weight)`` with ``crow`` of ``len(rows) + 1`` and the edges of ``rows[k]`` at
    ``crow[k]:crow[k + 1]``, in the graph's order (``weight`` only if given)."""
    rowptr, col, rows = rowptr.contiguous(), col.contiguous(), rows.contiguous()
    weight = None if weight is None else weight.contiguous()
    count = rowptr.index_select(0, rows + 1) - rowptr.index_select(0, rows)
    crow = torch.zeros(rows.numel() + 1, dtype=torch.long)
    torch.cumsum(count, 0, out=crow[1:])
    total = int(crow[-1])
    out_col = col.new_empty(total)
    out_weight = None if weight is None else weight.new_empty(total)
    # Without weights any variant copies the columns; the float32 one is taken.
    _call("in_edges", torch.float32 if weight is None else weight.dtype, rows.numel(), _p(rowptr),
          _p(rows), _p(crow), _p(col), _p(weight), _p(out_col), _p(out_weight))
    return crow, out_col, out_weight


def same_items(ids: Tensor, rows: Tensor, num_nodes: int) -> bool | None:
    """Whether ``ids`` (any shape) and the distinct ``rows`` hold the same items, padding (0)
    aside; ``None`` if a value is outside ``0..num_nodes - 1`` (the caller's eager check then
    raises its own error)."""
    ids, rows = ids.reshape(-1).contiguous(), rows.contiguous()
    mark = torch.empty(num_nodes, dtype=torch.uint8)
    same = library().same_items(ids.numel(), _p(ids), rows.numel(), _p(rows), num_nodes,
                                _p(mark))
    return None if same < 0 else bool(same)


def index_add(out: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``out[index[p]] += src[p]`` for every ``p`` (indices may repeat), in place: torch's
    ``out.index_add_(0, index, src)`` for a contiguous 2-D ``out``, in one loop.

    Raises:
        IndexError: An index is outside ``0..len(out) - 1`` (the loop reads them unchecked).
    """
    index, src = index.contiguous(), src.contiguous()
    if not out.is_contiguous() or src.shape != (index.numel(), out.size(1)):
        raise ValueError(f"index_add: out {tuple(out.shape)} (contiguous), index "
                         f"{tuple(index.shape)} and src {tuple(src.shape)} do not match")
    if index.numel():
        low, high = torch.aminmax(index)
        if int(low) < 0 or int(high) >= out.size(0):
            raise IndexError(f"index_add: index {int(low) if int(low) < 0 else int(high)} is "
                             f"outside 0..{out.size(0) - 1}")
    _call("index_add", out.dtype, index.numel(), out.size(1), _p(index), _p(src), _p(out))
    return out


def scatter(crow: Tensor, col: Tensor, weight: Tensor | None, grad: Tensor,
            num_sources: int) -> Tensor:
    """``out[col[e]] += weight[e] * grad[i]`` for every edge ``e`` of target ``i``: the
    backward pass of a weighted sum over the CSR ``(crow, col)``; ``(num_sources, F)``."""
    crow, col, grad = crow.contiguous(), col.contiguous(), grad.contiguous()
    weight = None if weight is None else weight.contiguous()
    out = grad.new_zeros(num_sources, grad.size(1))
    _call("csr_scatter", grad.dtype, grad.size(0), grad.size(1), _p(crow), _p(col), _p(weight),
          _p(grad), _p(out))
    return out


def attend_forward(crow: Tensor, col: Tensor, x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """Dot-product attention of the targets' queries ``q`` over their in-edges' sources ``x``:
    ``(out, alpha)``, the ``(len(q), F)`` result and the softmax weight of every edge."""
    crow, col, x, q = crow.contiguous(), col.contiguous(), x.contiguous(), q.contiguous()
    out = q.new_empty(q.shape)
    alpha = q.new_empty(col.numel())
    _call("attend_forward", q.dtype, q.size(0), q.size(1), _p(crow), _p(col), _p(x), _p(q),
          _p(alpha), _p(out))
    return out, alpha


def attend_backward(crow: Tensor, col: Tensor, x: Tensor, q: Tensor, alpha: Tensor,
                    grad: Tensor) -> tuple[Tensor, Tensor]:
    """The gradients ``(grad_x, grad_q)`` of :func:`attend_forward` given ``grad`` of its
    output."""
    crow, col = crow.contiguous(), col.contiguous()
    x, q, grad = x.contiguous(), q.contiguous(), grad.contiguous()
    grad_x = x.new_zeros(x.shape)
    grad_q = q.new_empty(q.shape)
    scratch = alpha.new_empty(alpha.shape)  # held here: _p keeps only the address
    _call("attend_backward", q.dtype, q.size(0), q.size(1), _p(crow), _p(col), _p(x), _p(q),
          _p(alpha), _p(grad), _p(scratch), _p(grad_x), _p(grad_q))
    return grad_x, grad_q
