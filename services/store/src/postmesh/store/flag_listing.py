"""ListMessageFlags: a mailbox's UIDs, MODSEQs and flags folded into parallel columns.

IMAP SELECT needs only these three of every message. Sent as packed arrays with each distinct
flag set once, 10,000 messages are ~100 KB on the wire and a few thousand Python objects at
each end instead of 10,000 messages of six fields each.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from postmesh.common import columns
from postmesh.common.lru import Lru
from postmesh.store.model import FlagListing

# Rows per page when the request says 0, and at most: a row is ~12 bytes on the wire.
DEFAULT_PAGE = 50_000
MAX_PAGE = 100_000
# A page also ends once its distinct flag sets hold this many characters, so one whose
# messages each carry long keywords of their own stays far below gRPC's 4 MiB message limit.
MAX_FLAG_SET_CHARS = 1 << 20

K = TypeVar("K", bound=Hashable)


def fold(
    rows: Sequence[tuple[int, int, K]], limit: int, decode: Callable[[K], tuple[str, ...]]
) -> FlagListing:
    """``rows`` are (uid, modseq, stored flags) in ascending UID order, up to ``limit`` + 1 of
    them (one more tells that others follow). ``decode`` turns a stored flags value into the
    flags; it runs once per distinct value, not once per message. Column by column, so the
    per-message work is C-level (zip, map, dict look-ups)."""
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return FlagListing(more=more)
    uids, modseqs, keys = zip(*rows, strict=True)
    distinct = list(dict.fromkeys(keys))
    flag_sets = [decode(k) for k in distinct]
    chars = 0
    for n, flags in enumerate(flag_sets):
        chars += sum(len(f) + 1 for f in flags)
        if chars > MAX_FLAG_SET_CHARS and n:
            # End the page before the first message with this set (never an empty page).
            page = fold(rows[: keys.index(distinct[n])], limit, decode)
            page.more = True
            return page
    position = {k: i for i, k in enumerate(distinct)}
    return FlagListing(
        list(uids), list(modseqs), list(map(position.__getitem__, keys)), flag_sets, more
    )


# Rows the listing cache of one store process holds at most (16 octets each: ~8 MiB).
CACHE_ROWS = 512 * 1024
# A page as kept: UIDs, MODSEQs and flag-set indexes packed, the flag sets, ``more``.
_Entry = tuple["array[int]", "array[int]", "array[int]", list[tuple[str, ...]], bool]


class ListingCache:
    """Pages as listed at a mailbox state (the key names it: mailbox, UIDVALIDITY, UIDNEXT,
    HIGHESTMODSEQ, count and the page asked for), so a SELECT of a mailbox that has not changed
    since the last one is not listed again (ADR 0051). A changed mailbox has another key: an
    entry is never stale, only unused, and the least recently used go first. Kept as packed
    arrays; each hit is a fresh FlagListing the caller may keep."""

    def __init__(self, max_rows: int = CACHE_ROWS) -> None:
        self._pages: Lru[Hashable, _Entry] = Lru(max_rows, lambda entry: len(entry[0]))

    def get(self, key: Hashable) -> FlagListing | None:
        entry = self._pages.get(key)
        if entry is None:
            return None
        uids, modseqs, index, sets, more = entry
        # Copies of the packed columns (one memcpy each): the servicer sends them as they are.
        return FlagListing(uids[:], modseqs[:], index[:], list(sets), more)

    def put(self, key: Hashable, page: FlagListing) -> None:
        entry = (
            array(columns.U32, page.uids), array(columns.U64, page.modseqs),
            array(columns.U32, page.flag_index), list(page.flag_sets), page.more,
        )  # fmt: skip
        self._pages.put(key, entry)
