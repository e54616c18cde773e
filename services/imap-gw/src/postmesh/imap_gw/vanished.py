"""VANISHED (EARLIER) when the store no longer has every expunge tombstone.

The store's janitor removes tombstones after a retention; GetChanges since an older MODSEQ then
says ``expunged_incomplete``. RFC 7162 lets the server answer with more UIDs than were expunged
since the client's MODSEQ: VANISHED (EARLIER) may name UIDs the client never had or was already
told about, and the client ignores those (section 3.2.10; section 3.2.5.2 for SELECT). So every
UID of the asked ranges that is not live is reported: always a superset of what vanished.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

Range = tuple[int, int]


def not_live(live: Sequence[int], ranges: Iterable[Range]) -> list[Range]:
    """The parts of ``ranges`` (inclusive, either order) holding no UID of ``live``
    (ascending), as ascending, non-overlapping ranges."""
    out: list[Range] = []
    for a, b in merge(ranges):
        start = a
        i = bisect.bisect_left(live, a)
        while i < len(live) and live[i] <= b:
            if live[i] > start:
                out.append((start, live[i] - 1))
            start = live[i] + 1
            i += 1
        if start <= b:
            out.append((start, b))
    return out


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Ascending, non-overlapping ranges covering the same UIDs (adjacent ones joined)."""
    out: list[Range] = []
    for a, b in sorted((min(r), max(r)) for r in ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def uid_set(ranges: Iterable[Range]) -> str:
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in merge(ranges))
