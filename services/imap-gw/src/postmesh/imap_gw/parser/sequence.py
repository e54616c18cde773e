"""Sequence sets (RFC 9051 §9 ``sequence-set``) and their resolution against a mailbox."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.errors import ParseError

STAR = 0  # "*": the largest number in use (0 is never a valid seq-number, so it can stand for it)


class SequenceError(ValueError):
    """A sequence set that is well-formed but names messages that do not exist (BAD)."""


@dataclass(frozen=True)
class SequenceSet:
    """Ranges as written, ``STAR`` for ``*``; a single number is a range of one. ``saved`` is
    ``$``, the result of the last SEARCH ... RETURN (SAVE) (RFC 5182 §2.1): no ranges then; the
    command resolves it from the session (``SavedSearch.expand_in``)."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)

    def _bounds(self, largest: int) -> list[tuple[int, int]]:
        """Inclusive spans, "*" resolved to ``largest``, sorted, overlapping and adjacent ones
        merged: each number of the set is in exactly one span."""
        spans = []
        for a, b in self.ranges:
            lo, hi = (largest if a == STAR else a), (largest if b == STAR else b)
            spans.append((min(lo, hi), max(lo, hi)))
        spans.sort()
        out: list[tuple[int, int]] = []
        for lo, hi in spans:
            if out and lo <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(hi, out[-1][1]))
            else:
                out.append((lo, hi))
        return out

    def resolve_seq(self, exists: int) -> list[int]:
        """Message sequence numbers, ascending and unique. A number above EXISTS, or ``*`` in an
        empty mailbox, is a client error (RFC 9051 §6.4.x: "invalid sequence numbers")."""
        if self.saved:
            raise SequenceError("$ must be expanded from the saved search result first")
        for a, b in self.ranges:
            if exists == 0 or (a != STAR and a > exists) or (b != STAR and b > exists):
                raise SequenceError(f"sequence number out of range (mailbox has {exists} messages)")
        seqs: list[int] = []
        for lo, hi in self._bounds(exists):  # disjoint and ascending: no set, no sort
            seqs.extend(range(lo, hi + 1))
        return seqs

    def resolve_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs in ``uids`` (ascending) that the set names. Non-existent UIDs are ignored, and
        ``n:*`` always includes the largest UID even when n is above it (RFC 9051 §6.4.9)."""
        if self.saved:
            raise SequenceError("$ must be expanded from the saved search result first")
        if not uids:
            return []
        found: list[int] = []
        for lo, hi in self._bounds(uids[-1]):  # disjoint and ascending: no set, no sort
            i = bisect.bisect_left(uids, lo)
            j = bisect.bisect_right(uids, hi)
            found.extend(uids[i:j])
        return found


def parse_sequence_set(cur: Cursor, *, allow_saved: bool = False) -> SequenceSet:
    """sequence-set = (seq-number / seq-range) ["," sequence-set]; seq-number = nz-number / "*".
    With ``allow_saved``, also ``sequence-set =/ seq-last-command`` ("$", RFC 5182 §3), which
    stands alone: it is not combined with numbers or ranges."""

    def seq_number() -> int:
        if cur.skip(b"*"):
            return STAR
        if cur.peek_is(b"$"):
            raise ParseError("$ (the saved search result) must stand alone")
        return cur.number(nonzero=True)

    ranges: list[tuple[int, int]] = []
    if cur.peek_is(b"$"):
        if not allow_saved:
            raise ParseError("the $ search result variable (SEARCHRES) is not supported here")
        cur.pos += 1
        c = cur.peek()
        if c is not None and c not in (0x20, 0x29):
            raise ParseError("Invalid sequence set: $ must stand alone")
        return SequenceSet((), saved=True)
    try:
        while True:
            a = seq_number()
            b = seq_number() if cur.skip(b":") else a
            ranges.append((a, b))
            if not cur.skip(b","):
                break
        c = cur.peek()
        if c is not None and c not in (0x20, 0x29):
            raise cur.error("unexpected character")
    except ParseError as e:
        raise ParseError(f"Invalid sequence set: {e.message}") from None
    return SequenceSet(tuple(ranges))
