"""SEARCH / UID SEARCH (RFC 9051 §6.4.4, RFC 3501 §6.4.4) parsed into typed criteria.

``search = "SEARCH" [search-return-opts] SP search-program`` (RFC 9051 §9, RFC 4731 §3);
``search-program = ["CHARSET" SP charset SP] search-key *(SP search-key)``. Strings arrive quoted
or as literals and are decoded as UTF-8 (US-ASCII is a subset); any other charset is refused
with NO [BADCHARSET] as RFC 9051 §6.4.4 requires. The MODSEQ key is RFC 7162 §3.1.5; ``$`` (the
saved search result) is RFC 5182.

The criteria are plain immutable values: the session resolves message sequence numbers and ``$``
into UID sets, and the store backend turns the result into its own SearchKey tree.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.errors import NotSupported, ParseError
from postmesh.imap_gw.parser.sequence import SequenceSet, parse_sequence_set

# Charsets every server must accept (RFC 9051 §6.4.4: US-ASCII and UTF-8).
CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET = "BADCHARSET (" + " ".join(CHARSETS) + ")"
# Bounds that keep a hostile command from costing unbounded stack or store work; the store
# refuses deeper or larger trees anyway (postmesh.store.search MAX_DEPTH / MAX_KEYS).
MAX_DEPTH = 50
MAX_KEYS = 500
MAX_NUMBER64 = 2**63 - 1  # number64 (RFC 9051 §9), mod-sequence-value (RFC 7162 §7)
_NUMBER = re.compile(rb"[0-9]+")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}


class BadCharset(NotSupported):
    """CHARSET names a charset we do not search in: tagged NO [BADCHARSET (...)]."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"Unsupported charset {charset[:40]!r}", code=BADCHARSET)


class ReturnOption(enum.Enum):
    """ESEARCH result options (RFC 4731 §3.1) and SAVE (RFC 5182 §2.4)."""

    MIN = "MIN"
    MAX = "MAX"
    ALL = "ALL"
    COUNT = "COUNT"
    SAVE = "SAVE"


class DateField(enum.Enum):
    INTERNAL = "internal"  # BEFORE/ON/SINCE: the internal date (RFC 9051 §2.3.3)
    SENT = "sent"  # SENTBEFORE/SENTON/SENTSINCE: the Date: header field


class DateOp(enum.Enum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


# -- the criteria ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchKey:
    """Base of every search criterion."""


@dataclass(frozen=True)
class All(SearchKey):
    pass


@dataclass(frozen=True)
class Flag(SearchKey):
    """A system flag (with its backslash) or keyword is set (``present``) or not."""

    flag: str
    present: bool = True


@dataclass(frozen=True)
class Recent(SearchKey):
    """\\Recent (IMAP4rev1 only; RFC 9051 removed it). NEW = RECENT UNSEEN, OLD = NOT RECENT."""


@dataclass(frozen=True)
class Date(SearchKey):
    field: DateField
    op: DateOp
    day: datetime.date


@dataclass(frozen=True)
class Size(SearchKey):
    """LARGER (``larger``) or SMALLER than ``octets`` (RFC822.SIZE)."""

    larger: bool
    octets: int


@dataclass(frozen=True)
class Header(SearchKey):
    """The field ``name`` contains ``value`` (case-insensitive); FROM/TO/CC/BCC/SUBJECT are
    HEADER of that field. An empty value matches every message that has the field."""

    name: str
    value: str


@dataclass(frozen=True)
class Body(SearchKey):
    text: str


@dataclass(frozen=True)
class Text(SearchKey):
    """Header or body contains ``text``."""

    text: str


@dataclass(frozen=True)
class Seq(SearchKey):
    """Message sequence numbers (``sequence.saved`` for ``$``: the saved result)."""

    sequence: SequenceSet


@dataclass(frozen=True)
class Uid(SearchKey):
    """UIDs (``sequence.saved`` for ``UID $``); ``STAR`` in a range is the highest UID."""

    sequence: SequenceSet


@dataclass(frozen=True)
class ModSeq(SearchKey):
    """MODSEQ >= ``modseq`` (RFC 7162 §3.1.5). The entry name and type are accepted and
    ignored: this server keeps one mod-sequence per message, not per flag."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True)
class Not(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class Or(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class And(SearchKey):
    """A parenthesised list, and the top-level list of keys: all must match."""

    keys: tuple[SearchKey, ...]


def uses_modseq(key: SearchKey) -> bool:
    """Whether MODSEQ occurs anywhere in the criteria (then responses carry MODSEQ data)."""
    stack = [key]
    while stack:
        k = stack.pop()
        if isinstance(k, ModSeq):
            return True
        if isinstance(k, Not):
            stack.append(k.key)
        elif isinstance(k, Or):
            stack.extend((k.left, k.right))
        elif isinstance(k, And):
            stack.extend(k.keys)
    return False


# -- parsing -----------------------------------------------------------------------------------

_FLAGS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADERS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
_DATES = {
    "BEFORE": (DateField.INTERNAL, DateOp.BEFORE),
    "ON": (DateField.INTERNAL, DateOp.ON),
    "SINCE": (DateField.INTERNAL, DateOp.SINCE),
    "SENTBEFORE": (DateField.SENT, DateOp.BEFORE),
    "SENTON": (DateField.SENT, DateOp.ON),
    "SENTSINCE": (DateField.SENT, DateOp.SINCE),
}
_ENTRY_TYPES = ("priv", "shared", "all")


class _Parser:
    def __init__(self, cur: Cursor) -> None:
        self.cur = cur
        self.keys = 0

    def string(self, what: str) -> str:
        """astring, decoded: quoted strings and literals may carry UTF-8 (RFC 9051 §4.3)."""
        cur = self.cur
        if cur.at_end():
            raise ParseError(f"missing {what}")
        cur.expect_sp()
        raw = cur.astring(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not valid UTF-8") from None

    def number64(self, what: str) -> int:
        cur = self.cur
        cur.expect_sp()
        m = _NUMBER.match(cur.data, cur.pos)
        if not m:
            raise cur.error(f"expected {what}")
        if len(m.group()) > 19 or int(m.group()) > MAX_NUMBER64:
            raise cur.error(f"{what} out of range")
        cur.pos = m.end()
        return int(m.group())

    def date(self) -> datetime.date:
        """date = date-text / DQUOTE date-text DQUOTE; date-text = d[d]-Mon-yyyy."""
        cur = self.cur
        cur.expect_sp()
        quoted = cur.skip(b'"')
        m = _DATE.match(cur.data, cur.pos)
        if m is None:
            raise cur.error("expected a date like 1-Feb-2024")
        month = _MONTHS.get(m.group(2).decode("ascii").upper())
        if month is None:
            raise ParseError(f"invalid month {m.group(2).decode('ascii')!r} in date")
        try:
            day = datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise ParseError(f"invalid date {m.group().decode('ascii')!r}") from None
        cur.pos = m.end()
        if quoted:
            cur.expect(b'"')
        return day

    def key_list(self, depth: int) -> tuple[SearchKey, ...]:
        """search-key *(SP search-key), up to a ``)`` or the end."""
        keys = [self.key(depth)]
        cur = self.cur
        while cur.peek() == 0x20:
            cur.pos += 1
            keys.append(self.key(depth))
        return tuple(keys)

    def key(self, depth: int) -> SearchKey:
        cur = self.cur
        if depth > MAX_DEPTH:
            raise ParseError(f"search criteria nested deeper than {MAX_DEPTH}")
        self.keys += 1
        if self.keys > MAX_KEYS:
            raise ParseError(f"more than {MAX_KEYS} search keys")
        c = cur.peek()
        if c == 0x28:  # "(" search-key *(SP search-key) ")"
            cur.pos += 1
            keys = self.key_list(depth + 1)
            if not cur.skip(b")"):
                raise cur.error("expected ')' to close the search key list")
            return keys[0] if len(keys) == 1 else And(keys)
        if c is not None and (0x30 <= c <= 0x39 or c in (0x2A, 0x24)):  # digit, "*", "$"
            return Seq(parse_sequence_set(cur, allow_saved=True))
        if c is None:
            raise cur.error("expected a search key")
        name = cur.atom("a search key").upper()
        if name in _FLAGS:
            flag, present = _FLAGS[name]
            return Flag(flag, present)
        if name in _HEADERS:
            return Header(_HEADERS[name], self.string(f"a {name} string"))
        if name in _DATES:
            field_, op = _DATES[name]
            return Date(field_, op, self.date())
        if name == "ALL":
            return All()
        if name in ("KEYWORD", "UNKEYWORD"):
            cur.expect_sp()
            return Flag(cur.atom("a keyword"), name == "KEYWORD")
        if name == "HEADER":
            field_name = self.string("a header field name")
            if not field_name or any(
                not (0x21 <= ord(ch) <= 0x7E) or ch == ":" for ch in field_name
            ):
                raise ParseError(f"invalid header field name {field_name[:40]!r}")
            return Header(field_name, self.string("a header value"))
        if name in ("BODY", "TEXT"):
            s = self.string(f"a {name} string")
            return Body(s) if name == "BODY" else Text(s)
        if name in ("LARGER", "SMALLER"):
            return Size(name == "LARGER", self.number64("a size"))
        if name == "UID":
            cur.expect_sp()
            return Uid(parse_sequence_set(cur, allow_saved=True))
        if name == "NOT":
            cur.expect_sp()
            return Not(self.key(depth + 1))
        if name == "OR":
            cur.expect_sp()
            left = self.key(depth + 1)
            cur.expect_sp()
            return Or(left, self.key(depth + 1))
        if name == "MODSEQ":
            return self.modseq()
        # IMAP4rev1 only (RFC 3501 §6.4.4); RFC 9051 dropped \Recent.
        if name == "RECENT":
            return Recent()
        if name in ("OLD", "UNRECENT"):
            return Not(Recent())
        if name == "NEW":
            return And((Recent(), Flag("\\Seen", False)))
        raise ParseError(f"unknown search key {name[:40]!r}")

    def modseq(self) -> ModSeq:
        """MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 §3.1.5)."""
        cur = self.cur
        entry = entry_type = None
        if cur.peek_is(b' "'):
            cur.pos += 1
            raw = cur.quoted()
            if not raw.lower().startswith(b"/flags/") or len(raw) <= 7:
                raise ParseError('MODSEQ entry name must be "/flags/<flag>"')
            entry = raw.decode("ascii", "replace")
            cur.expect_sp()
            entry_type = cur.atom("an entry type (priv, shared or all)").lower()
            if entry_type not in _ENTRY_TYPES:
                raise ParseError(f"invalid MODSEQ entry type {entry_type[:20]!r}")
        return ModSeq(self.number64("a mod-sequence value"), entry, entry_type)


@dataclass(frozen=True)
class Search(Command):
    """SEARCH / UID SEARCH. ``returns`` is None without RETURN (classic ``* SEARCH`` unless
    IMAP4rev2 is enabled), else the options given (``RETURN ()`` means ALL, RFC 4731 §3.1)."""

    name: ClassVar[str] = "SEARCH"
    criteria: SearchKey = All()
    returns: tuple[ReturnOption, ...] | None = None
    charset: str | None = None
    uid: bool = False

    @property
    def label(self) -> str:
        return "UID SEARCH" if self.uid else "SEARCH"


def search_parser(uid: bool) -> Callable[[str, Cursor], Search]:
    def parse(tag: str, cur: Cursor) -> Search:
        criteria, returns, charset = parse_search(cur)
        return Search(tag, criteria, returns, charset, uid)

    return parse


def parse_search(
    cur: Cursor,
) -> tuple[SearchKey, tuple[ReturnOption, ...] | None, str | None]:
    """The arguments after ``SEARCH``: (criteria, return options, charset)."""
    if cur.at_end():
        raise ParseError("SEARCH needs at least one search key")
    cur.expect_sp()
    returns: tuple[ReturnOption, ...] | None = None
    if _keyword(cur, b"RETURN"):
        cur.expect_sp()
        opts: list[ReturnOption] = []
        for opt in cur.paren_list("a RETURN option"):
            try:
                ret = ReturnOption(opt.upper())
            except ValueError:
                raise ParseError(f"unknown RETURN option {opt[:20]!r}") from None
            if ret not in opts:
                opts.append(ret)
        returns = tuple(opts)
    try:
        return _parse_program(cur, returns)
    except ParseError as e:
        e.clears_saved = returns is not None and ReturnOption.SAVE in returns
        raise


def _parse_program(
    cur: Cursor, returns: tuple[ReturnOption, ...] | None
) -> tuple[SearchKey, tuple[ReturnOption, ...] | None, str | None]:
    """search-program, after the RETURN options (if any)."""
    charset: str | None = None
    if returns is not None:
        cur.expect_sp()
    if _keyword(cur, b"CHARSET"):
        cur.expect_sp()
        raw = cur.astring("a charset name")
        charset = raw.decode("ascii", "replace").upper()
        if charset not in CHARSETS:
            raise BadCharset(charset)
        cur.expect_sp()
    parser = _Parser(cur)
    keys = parser.key_list(0)
    cur.expect_end()
    criteria = keys[0] if len(keys) == 1 else And(keys)
    return criteria, returns, charset


def parse_charset_and_criteria(cur: Cursor) -> tuple[str, SearchKey]:
    """``charset 1*(SP search-key)`` as SORT and THREAD take them (RFC 5256 §4: the charset is
    not optional there), after the space that precedes them."""
    raw = cur.astring("a charset name")
    charset = raw.decode("ascii", "replace").upper()
    if charset not in CHARSETS:
        raise BadCharset(charset)
    cur.expect_sp()
    keys = _Parser(cur).key_list(0)
    cur.expect_end()
    return charset, keys[0] if len(keys) == 1 else And(keys)


def _keyword(cur: Cursor, word: bytes) -> bool:
    """Consume ``word`` (any case) when it is a whole atom at the cursor."""
    end = cur.pos + len(word)
    if cur.data[cur.pos : end].upper() == word and (end >= len(cur.data) or cur.data[end] == 0x20):
        cur.pos = end
        return True
    return False
