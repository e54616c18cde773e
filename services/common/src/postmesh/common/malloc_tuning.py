"""glibc malloc thresholds for processes that move mail in buffers of up to a few MiB (ADR 0057).

glibc serves an allocation of 128 KiB or more (its threshold grows by itself, but only as far
as the largest block freed so far) with a fresh ``mmap``, and gives memory at the top of a heap
back to the kernel once more than twice that is free. A store or gateway building and parsing
1 MiB gRPC responses then page-faults every octet it copies: measured, 1,053 minor faults and
~2-4 ms of the store's CPU per GetMessageContents of 3.4 MB, none with the thresholds fixed
above the largest buffer. Fixed thresholds also stop the dynamic adjustment.
"""

from __future__ import annotations

import ctypes
import os

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Above the largest buffer the services allocate often (1 MiB gRPC messages, 1 MiB of first
# chunks per SQLite read group, ADR 42 and 52), with room for the copies being joined.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
# Freed memory a process keeps at the top of a heap before returning it to the kernel.
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024

# glibc's own environment variables: an operator who sets either keeps glibc's behaviour.
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers() -> bool:
    """Fix the thresholds (glibc only; elsewhere, or when the environment sets them, nothing
    changes). True when they were set."""
    if any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols already in the process: its C library
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc (musl has no mallopt)
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
