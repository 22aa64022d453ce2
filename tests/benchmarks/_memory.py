"""Peak extra host memory of a function, sampled after every dispatched torch op.

glibc's `mallinfo2` gives the bytes the C allocator has handed out (arena and
mmapped chunks); a `TorchDispatchMode` reads it after each op, autograd's backward
ops included, so both fnn and torch autograd are measured the same way. Memory
that lives only inside one kernel is invisible to both alike.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2
# Serve every block of 1 MiB or more by mmap (a fixed threshold, not glibc's sliding one):
# mallinfo2 counts mmapped bytes exactly for all threads, while its arena figures cover
# the main arena only.
_M_MMAP_THRESHOLD = -3
_libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)


def in_use() -> int:
    """Bytes currently allocated through malloc (main-arena chunks + all mmapped blocks)."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _PeakTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.peak = in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, in_use())
        return out


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated while `fn()` runs, above what was allocated before it."""
    gc.collect()
    before = in_use()
    with _PeakTracker() as tracker:
        result = fn()
    del result
    return tracker.peak - before
