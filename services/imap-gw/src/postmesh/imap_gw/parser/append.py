"""APPEND (RFC 9051 §6.3.12), with binary (RFC 3516 §4.4) and UTF8 (RFC 6855 §4) message data.

append      = "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal
append      =/ "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal8   (RFC 3516 §4.4)
append-data =/ "UTF8" SP "(" literal8 ")"                         (RFC 6855 §4)
date-time   = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE

The message literal never reaches this parser: the connection stops before it
(:func:`is_message_literal`), the session parses the command up to it
(:func:`parse_append_head`), and the handler streams the literal to the store, then checks what
follows it (:func:`check_append_tail`). A whole APPEND buffer (no literal, so nothing was
streamed) only ever gets a syntax error from :func:`parse_append`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor, is_astring_char
from postmesh.imap_gw.parser.errors import ParseError
from postmesh.imap_gw.parser.store import parse_flags

_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)


@dataclass(frozen=True)
class Append(Command):
    name: ClassVar[str] = "APPEND"
    mailbox: bytes
    flags: tuple[str, ...] = ()
    internal_date: int | None = None  # Unix seconds; None: now
    size: int = 0
    synchronizing: bool = True
    utf8: bool = False  # UTF8 (~{n} ...) data (RFC 6855 §4)
    # A literal8 (~{n}): the message may hold NUL and any octet (RFC 3516 §4.4, BINARY).
    binary: bool = False


def _date_time(cur: Cursor) -> int:
    m = _DATE_TIME.match(cur.data, cur.pos)
    if not m:
        raise cur.error('expected a date-time such as "17-Jul-1996 02:44:25 -0700"')
    day, mon, year, hh, mm, ss, sign, zh, zm = (g.decode() for g in m.groups())
    month = _MONTHS.get(mon.upper())
    if month is None:
        raise ParseError(f"invalid month {mon!r} in date-time")
    if day.startswith(" "):
        day = day[1:]
    d, y, h, mi, s, zhh, zmm = (int(x) for x in (day, year, hh, mm, ss, zh, zm))
    if not 1 <= d <= calendar.monthrange(y, month)[1]:
        raise ParseError("invalid day in date-time")
    if h > 23 or mi > 59 or s > 60 or zhh > 23 or zmm > 59:
        raise ParseError("invalid time or zone in date-time")
    offset = (zhh * 3600 + zmm * 60) * (1 if sign == "+" else -1)
    value = calendar.timegm((y, month, d, h, mi, min(s, 59), 0, 0, 0)) - offset
    if value < 0:
        raise ParseError("date-time before 1970 is not supported")
    cur.pos = m.end()
    return value


def _head(tag: str, cur: Cursor) -> Append:
    """Everything up to the message literal, with the cursor where the literal starts."""
    cur.expect_sp()
    mailbox = cur.astring("a mailbox name")
    cur.expect_sp()
    flags: tuple[str, ...] = ()
    internal_date = None
    if cur.peek_is(b"("):
        flags = parse_flags(cur)
        cur.expect_sp()
    if cur.peek_is(b'"'):
        internal_date = _date_time(cur)
        cur.expect_sp()
    utf8 = binary = False
    if cur.data[cur.pos : cur.pos + 4].upper() == b"UTF8":
        cur.pos += 4
        cur.expect(b" (~")
        utf8 = True
    elif cur.skip(b"~"):
        # BINARY is advertised, so a literal8 is taken as the message (RFC 3516 §4.4). It is
        # stored as sent, like BINARYMIME mail (ADR 40): its content-transfer-encoding is
        # not changed, and FETCH BINARY gives the octets back exactly.
        binary = True
    return Append(tag, mailbox, flags, internal_date, utf8=utf8, binary=binary)


def _tag(cur: Cursor) -> str | None:
    tag = cur.take_while(lambda c: is_astring_char(c) and c != 0x2B)
    if not tag or not cur.skip(b" "):
        return None
    return tag.decode("ascii")


def is_message_literal(prefix: bytes) -> bool:
    """Is the literal that follows ``prefix`` (a command so far) APPEND's message? Only the
    mailbox name can be another literal of APPEND, and it comes first."""
    cur = Cursor(prefix)
    if _tag(cur) is None or cur.take_while(is_astring_char).upper() != b"APPEND":
        return False
    return cur.skip(b" ") and not cur.at_end()


def parse_append_head(prefix: bytes, size: int, synchronizing: bool) -> Append:
    """The APPEND command before its message literal of ``size`` octets. Raises ParseError."""
    cur = Cursor(prefix)
    tag = _tag(cur)
    if tag is None:
        raise ParseError("Missing or invalid tag")
    try:
        cur.take_while(is_astring_char)
        head = _head(tag, cur)
        cur.expect_end()
    except ParseError as e:
        e.tag = tag
        raise
    return Append(
        tag,
        head.mailbox,
        head.flags,
        head.internal_date,
        size,
        synchronizing,
        head.utf8,
        head.binary,
    )


def check_append_tail(tail: bytes, *, utf8: bool) -> None:
    """What follows the message literal: ``)`` closes UTF8 data, then the command ends."""
    cur = Cursor(tail)
    if utf8:
        cur.expect(b")")
    if cur.peek_is(b" "):
        raise ParseError("MULTIAPPEND (more than one message) is not supported")
    cur.expect_end()


def parse_append(tag: str, cur: Cursor) -> Command:
    """An APPEND with no message literal (it would have been streamed): always an error."""
    _head(tag, cur)
    raise cur.error("expected the message as a literal")
