"""CPU memory for training: freed blocks kept for reuse instead of handed back to the kernel.

glibc's malloc serves every block above its mmap threshold (32 MiB at most) with a fresh
`mmap` and unmaps it on `free`. A training step allocates and frees tensors of tens to hundreds
of MiB (a batch's activations and their gradients), so every step the kernel maps, zeroes and
faults in the same memory again. Measured on 2 cores (airbench, batch 2,000, bf16): about
800,000 page faults and 2 s of system time per step, a quarter of the step. Serving every
block from malloc's heap (`M_MMAP_MAX` 0) and keeping freed memory there (`M_TRIM_THRESHOLD`
high) removes that work; the arithmetic is unchanged.

The setting is process-wide, so `reused_memory` restores glibc's defaults when training ends and
returns the kept memory to the system (`malloc_trim`). Other C libraries are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
KEEP_UP_TO = 2**31 - 1  # bytes of free memory at the heap's top kept before trimming (int max)

_state = {"note": "system allocator"}  # what the current process does, for the engine line


def glibc() -> ctypes.CDLL | None:
    """The process's glibc, or None on another C library or operating system."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def set_malloc(libc: ctypes.CDLL, trim_threshold: int, mmap_max: int) -> bool:
    """Both mallopt settings; True when glibc accepted them."""
    return bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)) and bool(
        libc.mallopt(M_MMAP_MAX, mmap_max)
    )


@contextlib.contextmanager
def reused_memory(setting: str, device: torch.device) -> Iterator[None]:
    """While the block runs, a CPU run's freed memory stays in malloc's heap for reuse.

    setting: `reuse` (the default of `train.cpu_memory`) or `system` (malloc as it was).
    `current()` says, for the log, which of the two the block runs with.
    """
    libc = glibc() if setting == "reuse" and device.type == "cpu" else None
    previous = _state["note"]
    if libc is not None and set_malloc(libc, KEEP_UP_TO, 0):
        _state["note"] = "freed memory reused"
    elif device.type == "cpu":
        why = "not glibc" if setting == "reuse" else "as configured"
        _state["note"] = f"system allocator ({why})"
        libc = None
    try:
        yield
    finally:
        _state["note"] = previous
        if libc is not None:
            set_malloc(libc, DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX)
            libc.malloc_trim(0)


def current() -> str:
    """What this process's allocator does now, for the engine line."""
    return _state["note"]
