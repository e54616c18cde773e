"""SEARCH criteria about flags and UIDs only, answered from the selected-mailbox model.

After a resynchronisation (GetChanges since the model's HIGHESTMODSEQ, ``commands/sync.py``)
the model holds every message's flags as the store does, so UNSEEN, FLAGGED, KEYWORD, UID and
message-number criteria, and their NOT/OR/AND combinations, give the store's answer without
sending the mailbox's matching UIDs over gRPC and mapping each back to a sequence number.
Anything else (dates, sizes, headers, text, MODSEQ) goes to the store as before.

The answer is the store's, key by key (``postmesh.store.search.evaluate``): flags compared
case-insensitively (atoms, RFC 9051 §9); ``*`` in a UID set is the highest UID the store holds
and a range means the same in either order (RFC 9051 §6.4.8); messages expunged in the store
but not yet reported match nothing (the store no longer has them), and messages not yet
announced by EXISTS are outside the client's view (RFC 9051 §7.5.2).

Each criterion becomes a mask with one byte (0 or 1) per message, held as a Python integer,
so NOT, AND and OR are single integer operations over the whole mailbox.
"""

from __future__ import annotations

import bisect
from itertools import compress

from postmesh.imap_gw.parser.search import All, And, Flag, Not, Or, Recent, SearchKey, Uid
from postmesh.imap_gw.parser.sequence import STAR
from postmesh.imap_gw.state import Flags, SelectedMailbox


def answerable(key: SearchKey) -> bool:
    """Whether ``key`` (sequence numbers and ``$`` already resolved to UIDs) is about flags and
    UIDs only."""
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, Not):
            stack.append(k.key)
        elif isinstance(k, Or):
            stack.extend((k.left, k.right))
        elif isinstance(k, And):
            stack.extend(k.keys)
        elif isinstance(k, Uid):
            if k.sequence.saved:
                return False
        elif not isinstance(k, All | Flag | Recent):
            return False
    return True


class _Masks:
    def __init__(self, sel: SelectedMailbox) -> None:
        self.sel = sel
        self.n = len(sel.uids)
        self.ones = int.from_bytes(b"\x01" * self.n, "little")
        self._highest: int | None = None

    def of(self, key: SearchKey) -> int:
        if isinstance(key, All):
            return self.ones
        if isinstance(key, Recent):
            return self._flag("\\recent", True)  # the session's flag, in the model's flags
        if isinstance(key, Flag):
            return self._flag(key.flag.lower(), key.present)
        if isinstance(key, Uid):
            return self._uids(key)
        if isinstance(key, Not):
            return self.ones ^ self.of(key.key)
        if isinstance(key, Or):
            return self.of(key.left) | self.of(key.right)
        if isinstance(key, And):
            mask = self.ones
            for k in key.keys:
                mask &= self.of(k)
            return mask
        raise TypeError(f"not answerable from the model: {type(key).__name__}")

    def _flag(self, flag: str, present: bool) -> int:
        column = self.sel.flag_column
        # Decided once per distinct flag set (a mailbox has a handful), then looked up.
        table: dict[Flags, int] = {
            flags: int((flag in {f.lower() for f in flags}) == present) for flags in set(column)
        }
        return int.from_bytes(bytes(map(table.__getitem__, column)), "little")

    def _uids(self, key: Uid) -> int:
        if self._highest is None:
            self._highest = self.sel.store_highest_uid()
        uids = self.sel.uids
        marks = bytearray(self.n)
        for a, b in key.sequence.ranges:
            a, b = (self._highest if a == STAR else a), (self._highest if b == STAR else b)
            i = bisect.bisect_left(uids, min(a, b))
            j = bisect.bisect_right(uids, max(a, b))
            if i < j:
                marks[i:j] = b"\x01" * (j - i)
        return int.from_bytes(marks, "little")


def search(sel: SelectedMailbox, key: SearchKey) -> tuple[list[int], list[int]]:
    """The UIDs matching ``key`` among the messages the client has been told of, ascending,
    and their sequence numbers. The model must have just been resynchronised."""
    masks = _Masks(sel)
    mask = masks.of(key)
    for uid in sel.unreported_expunges():
        seq = sel.seq_of(uid)
        if seq is not None:
            mask &= ~(1 << (8 * (seq - 1)))
    hits = mask.to_bytes(masks.n, "little")
    return list(compress(sel.uids, hits)), list(compress(range(1, masks.n + 1), hits))
