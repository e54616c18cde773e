"""COPY, MOVE and their UID forms.

copy = "COPY" SP sequence-set SP mailbox                        (RFC 9051 §6.4.7)
move = "MOVE" SP sequence-set SP mailbox                        (RFC 6851 §3.1, RFC 9051 §6.4.8)
uid  = "UID" SP (copy / move / ...)                             (RFC 9051 §6.4.9)

``$`` (SEARCHRES, RFC 5182 §2.1) is allowed as the sequence set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.sequence import SequenceSet, parse_sequence_set


@dataclass(frozen=True)
class Copy(Command):
    name: ClassVar[str] = "COPY"
    sequence: SequenceSet
    mailbox: bytes
    uid: bool = False

    @property
    def label(self) -> str:
        return f"UID {self.name}" if self.uid else self.name


@dataclass(frozen=True)
class Move(Copy):
    name: ClassVar[str] = "MOVE"


def copy_parser(cls: type[Copy], *, uid: bool) -> Callable[[str, Cursor], Command]:
    def parse(tag: str, cur: Cursor) -> Command:
        cur.expect_sp()
        seq = parse_sequence_set(cur, allow_saved=True)
        cur.expect_sp()
        mailbox = cur.astring("a mailbox name")
        cur.expect_end()
        return cls(tag, seq, mailbox, uid)

    return parse
