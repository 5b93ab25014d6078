"""Keep freed heap memory in the process instead of handing it back to the kernel after every batch.

glibc gives the top of the heap back to the kernel as soon as more than 128 KiB of it is free. A
normalize batch builds a few megabytes of events and frees them when it is published, so with those
defaults every batch gets its memory back from the kernel page by page, zeroed: bench/normalize.py
counts the page faults (about 1,100 per batch of 100 bodies) and shows normalize spending about a
quarter of its time there. Keeping up to 64 MiB of freed heap (and serving allocations of up to 32 MiB
from the heap rather than from mmap) removes them, for a few tens of megabytes of resident memory.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREE_BYTES = 64 * 1024 * 1024
LARGEST_HEAP_ALLOCATION = 32 * 1024 * 1024  # glibc's own ceiling for the mmap threshold on 64-bit


def runs_on_glibc() -> bool:
    """Whether the C library is glibc: the settings below are glibc's and mean nothing elsewhere."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name: not glibc
        return False


def keep_freed_memory() -> bool:
    """Set the process's malloc to keep freed memory; False (nothing changed) where libc is not glibc."""
    if not runs_on_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the running process's own malloc
    kept = mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)
    return bool(kept) and bool(mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_ALLOCATION))
