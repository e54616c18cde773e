"""SORT and THREAD (RFC 5256 §4), with SORT=DISPLAY's keys (RFC 5957), parsed into typed
commands. ``sort = ["UID" SP] "SORT" SP sort-criteria SP search-criteria``;
``thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria``;
``search-criteria = charset 1*(SP search-key)``."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.errors import ParseError
from postmesh.imap_gw.parser.search import All, SearchKey, parse_charset_and_criteria

# A client has no reason to name more keys than there are (each may also be REVERSE'd).
MAX_SORT_CRITERIA = 16


class SortKey(enum.Enum):
    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"
    DISPLAYFROM = "DISPLAYFROM"  # RFC 5957
    DISPLAYTO = "DISPLAYTO"


class ThreadAlgorithm(enum.Enum):
    ORDEREDSUBJECT = "ORDEREDSUBJECT"
    REFERENCES = "REFERENCES"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


@dataclass(frozen=True)
class Sort(Command):
    name: ClassVar[str] = "SORT"
    order: tuple[SortCriterion, ...] = ()
    charset: str = "UTF-8"
    criteria: SearchKey = field(default_factory=All)
    uid: bool = False

    @property
    def label(self) -> str:
        return "UID SORT" if self.uid else "SORT"


@dataclass(frozen=True)
class Thread(Command):
    name: ClassVar[str] = "THREAD"
    algorithm: ThreadAlgorithm = ThreadAlgorithm.REFERENCES
    charset: str = "UTF-8"
    criteria: SearchKey = field(default_factory=All)
    uid: bool = False

    @property
    def label(self) -> str:
        return "UID THREAD" if self.uid else "THREAD"


def _sort_criteria(cur: Cursor) -> tuple[SortCriterion, ...]:
    """``"(" sort-criterion *(SP sort-criterion) ")"``, ``sort-criterion = ["REVERSE" SP]
    sort-key``."""
    words = cur.paren_list("a sort key")
    if not words:
        raise ParseError("SORT needs at least one sort key")
    out: list[SortCriterion] = []
    reverse = False
    for word in words:
        upper = word.upper()
        if upper == "REVERSE" and not reverse:
            reverse = True
            continue
        try:
            key = SortKey(upper)
        except ValueError:
            raise ParseError(f"unknown sort key {word[:20]!r}") from None
        out.append(SortCriterion(key, reverse))
        reverse = False
    if reverse:
        raise ParseError("REVERSE must be followed by a sort key")
    if len(out) > MAX_SORT_CRITERIA:
        raise ParseError(f"at most {MAX_SORT_CRITERIA} sort keys")
    return tuple(out)


def sort_parser(uid: bool) -> Callable[[str, Cursor], Sort]:
    def parse(tag: str, cur: Cursor) -> Sort:
        cur.expect_sp()
        order = _sort_criteria(cur)
        cur.expect_sp()
        charset, criteria = parse_charset_and_criteria(cur)
        return Sort(tag, order, charset, criteria, uid)

    return parse


def thread_parser(uid: bool) -> Callable[[str, Cursor], Thread]:
    def parse(tag: str, cur: Cursor) -> Thread:
        cur.expect_sp()
        word = cur.atom("a threading algorithm")
        try:
            algorithm = ThreadAlgorithm(word.upper())
        except ValueError:
            raise ParseError(f"unknown threading algorithm {word[:20]!r}") from None
        cur.expect_sp()
        charset, criteria = parse_charset_and_criteria(cur)
        return Thread(tag, algorithm, charset, criteria, uid)

    return parse
