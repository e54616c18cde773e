"""Queue ids: unique across replicas, sortable by time, safe in headers and logs."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # no vowels: ids never spell words


def _encode(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_queue_id() -> str:
    """10 characters of milliseconds since the epoch, then 10 of randomness (~49 bits)."""
    ms = time.time_ns() // 1_000_000
    return _encode(ms, 10) + _encode(int.from_bytes(os.urandom(7), "big"), 10)
