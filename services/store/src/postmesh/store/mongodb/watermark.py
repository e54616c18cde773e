"""Pending MODSEQs: what a reader of a mailbox may report as seen.

Without transactions a write is two steps: ``_allocate`` takes a UID/MODSEQ on the mailbox
document, then the message (or its flags, or its tombstone) is written with it. A reader in
between would see HIGHESTMODSEQ = n while the change carrying n is not there yet; a session told
n asks "changes since n" from then on and never learns of it (RFC 7162 section 3.1: a reported
MODSEQ covers every change at or below it). Likewise a UID shown above one still being written
breaks the ascending order of RFC 9051 section 2.3.1.1.

So an allocation marks itself pending on the mailbox document in the same atomic update, and
the writer clears the mark once its writes are done. The MODSEQ is known only after that
update, so the mark holds a lower bound of it (and of the first UID): the last values this
process saw, exact while one process writes the mailbox. Readers report a HIGHESTMODSEQ below
every pending mark and a UIDNEXT no higher than any, and list nothing above either: a change
can be reported twice, never skipped. A writer that died leaves its mark: it is ignored after
STALE_SECONDS (far longer than a write takes) and removed by the mailbox's next writer.
"""

from __future__ import annotations

from typing import Any

from postmesh.common.lru import Lru

Doc = dict[str, Any]

FIELD = "pending"
STALE_SECONDS = 30.0


def mark(floor_modseq: int, floor_uid: int, now: float) -> Doc:
    """The mark of an allocation: a MODSEQ and a first UID it takes at least, and its time."""
    return {"m": floor_modseq, "u": floor_uid, "t": now}


def stale_keys(doc: Doc, now: float) -> list[str]:
    return [k for k, e in (doc.get(FIELD) or {}).items() if e["t"] <= now - STALE_SECONDS]


def visible(doc: Doc, now: float) -> tuple[int, int]:
    """(UIDNEXT, HIGHESTMODSEQ) as a reader may report them from a mailbox document."""
    uidnext, highest = int(doc["uidnext"]), int(doc["highestmodseq"])
    for e in (doc.get(FIELD) or {}).values():
        if e["t"] > now - STALE_SECONDS:
            highest = min(highest, int(e["m"]) - 1)
            uidnext = min(uidnext, int(e["u"]))
    return uidnext, highest


class Counters(Lru[Any, tuple[int, int]]):
    """The (uidnext, highestmodseq) this process last saw per mailbox, for the marks' lower
    bounds without a read per write. Bounded: a mailbox not in it costs one read."""

    def __init__(self, size: int = 50_000) -> None:
        super().__init__(size)
