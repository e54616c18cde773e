"""STORE, EXPUNGE / UID EXPUNGE, IDLE and the CONDSTORE/QRESYNC SELECT parameters.

store = "STORE" SP sequence-set [SP "(" "UNCHANGEDSINCE" SP mod-sequence-valzer ")"]
        SP store-att-flags                                       (RFC 9051 §9, RFC 7162 §7)
store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
select-param = "CONDSTORE" / "QRESYNC" SP "(" uidvalidity SP mod-sequence-value
               [SP known-uids] [SP seq-match-data] ")"          (RFC 7162 §7)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor, is_atom_char
from postmesh.imap_gw.parser.errors import ParseError
from postmesh.imap_gw.parser.sequence import SequenceSet, parse_sequence_set

MAX_MODSEQ = 2**63 - 1  # mod-sequence-value = 1*DIGIT, up to 2^63-1 (RFC 7162 §7)
_DIGITS = re.compile(rb"[0-9]+")

# System flags a client may set (RFC 9051 §2.3.2). \Recent is the server's alone (RFC 3501
# §2.3.2), and other "\" names are reserved for future standards (flag-extension).
STORABLE_SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
}


class StoreMode(enum.Enum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True)
class Store(Command):
    name: ClassVar[str] = "STORE"
    sequence: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None
    uid: bool = False

    @property
    def label(self) -> str:
        return "UID STORE" if self.uid else "STORE"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE with its UID set (RFC 4315 §2.1)."""

    name: ClassVar[str] = "EXPUNGE"
    uids: SequenceSet | None = None

    @property
    def label(self) -> str:
        return "UID EXPUNGE" if self.uids is not None else "EXPUNGE"


@dataclass(frozen=True)
class Idle(Command):
    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True)
class QresyncParams:
    """SELECT (QRESYNC (uidvalidity modseq [known-uids] [(known-seqs known-uids)]))."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class SelectParams:
    condstore: bool = False
    qresync: QresyncParams | None = None


NO_SELECT_PARAMS = SelectParams()


def mod_sequence(cur: Cursor, *, allow_zero: bool) -> int:
    """mod-sequence-value (1..2^63-1), or mod-sequence-valzer (0..2^63-1)."""
    m = _DIGITS.match(cur.data, cur.pos)
    if not m:
        raise cur.error("expected a mod-sequence value")
    value = int(m.group())
    if value > MAX_MODSEQ or (value == 0 and not allow_zero):
        raise cur.error("mod-sequence value out of range")
    cur.pos = m.end()
    return value


def _flag(cur: Cursor) -> str:
    if cur.skip(b"\\"):
        name = "\\" + cur.atom("a flag name")
        known = STORABLE_SYSTEM_FLAGS.get(name.upper())
        if known is None:
            if name.upper() == "\\RECENT":
                raise ParseError("\\Recent cannot be set or cleared by a client")
            raise ParseError(f"unknown system flag {name[:40]}")
        return known
    token = cur.take_while(is_atom_char)
    if not token:
        raise cur.error("expected a flag")
    return token.decode("ascii")


def parse_flags(cur: Cursor) -> tuple[str, ...]:
    """flag-list, or flags separated by spaces (STORE only, RFC 9051 §6.4.6)."""
    flags: list[str] = []
    if cur.skip(b"("):
        if cur.skip(b")"):
            return ()
        while True:
            flags.append(_flag(cur))
            if cur.skip(b")"):
                break
            cur.expect_sp()
    else:
        flags.append(_flag(cur))
        while cur.skip(b" "):
            flags.append(_flag(cur))
    return tuple(dict.fromkeys(flags))


def store_parser(uid: bool) -> Callable[[str, Cursor], Command]:
    def parse(tag: str, cur: Cursor) -> Command:
        cur.expect_sp()
        seq = parse_sequence_set(cur, allow_saved=True)  # "$": RFC 5182 §2.1
        cur.expect_sp()
        unchanged_since = None
        if cur.skip(b"("):
            modifier = cur.atom("a STORE modifier").upper()
            if modifier != "UNCHANGEDSINCE":
                raise ParseError(f"unknown STORE modifier {modifier[:40]}")
            cur.expect_sp()
            unchanged_since = mod_sequence(cur, allow_zero=True)
            cur.expect(b")")
            cur.expect_sp()
        item = cur.atom("FLAGS, +FLAGS or -FLAGS").upper()
        mode = StoreMode.REPLACE
        if item.startswith("+"):
            mode, item = StoreMode.ADD, item[1:]
        elif item.startswith("-"):
            mode, item = StoreMode.REMOVE, item[1:]
        silent = item.endswith(".SILENT")
        if silent:
            item = item[: -len(".SILENT")]
        if item != "FLAGS":
            raise ParseError("expected FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
        cur.expect_sp()
        flags = parse_flags(cur)
        cur.expect_end()
        return Store(tag, seq, mode, flags, silent, unchanged_since, uid)

    return parse


def parse_expunge(tag: str, cur: Cursor) -> Command:
    cur.expect_end()
    return Expunge(tag)


def parse_uid_expunge(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    uids = parse_sequence_set(cur, allow_saved=True)  # "$": RFC 5182 §2.1
    cur.expect_end()
    return Expunge(tag, uids)


def parse_idle(tag: str, cur: Cursor) -> Command:
    # idle = "IDLE" CRLF "DONE" (RFC 2177 §4): no arguments.
    if not cur.at_end():
        raise ParseError("IDLE takes no arguments")
    return Idle(tag)


def _qresync(cur: Cursor) -> QresyncParams:
    cur.expect(b"(")
    uidvalidity = cur.number(nonzero=True)
    cur.expect_sp()
    modseq = mod_sequence(cur, allow_zero=False)
    known: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None
    if cur.skip(b" "):
        if not cur.peek_is(b"("):
            known = parse_sequence_set(cur)
            _no_star(known, "known-uids")
            if cur.skip(b" ") and not cur.peek_is(b"("):
                raise cur.error("expected a sequence match list")
        if cur.skip(b"("):
            seqs = parse_sequence_set(cur)
            cur.expect_sp()
            uids = parse_sequence_set(cur)
            cur.expect(b")")
            _no_star(seqs, "known-sequence-set")
            _no_star(uids, "known-uid-set")
            if _count(seqs) != _count(uids):
                raise ParseError("the sequence match sets differ in size")
            seq_match = (seqs, uids)
    cur.expect(b")")
    return QresyncParams(uidvalidity, modseq, known, seq_match)


def _no_star(s: SequenceSet, what: str) -> None:
    # RFC 7162 §3.2.5: "*" is not allowed in known-uids and the seq-match sets.
    if any(0 in r for r in s.ranges):
        raise ParseError(f'"*" is not allowed in {what}')


def _count(s: SequenceSet) -> int:
    return sum(abs(b - a) + 1 for a, b in s.ranges)


def parse_select_params(cur: Cursor) -> SelectParams:
    """After the mailbox name: nothing, or SP "(" select-param *(SP select-param) ")"."""
    if cur.at_end():
        return NO_SELECT_PARAMS
    cur.expect_sp()
    cur.expect(b"(")
    condstore = False
    qresync: QresyncParams | None = None
    while True:
        param = cur.atom("a SELECT parameter").upper()
        if param == "CONDSTORE" and not condstore:
            condstore = True
        elif param == "QRESYNC" and qresync is None:
            cur.expect_sp()
            qresync = _qresync(cur)
        elif param in ("CONDSTORE", "QRESYNC"):
            raise ParseError(f"{param} given twice")
        else:
            raise ParseError(f"unknown SELECT parameter {param[:40]}")
        if cur.skip(b")"):
            break
        cur.expect_sp()
    cur.expect_end()
    return SelectParams(condstore, qresync)
