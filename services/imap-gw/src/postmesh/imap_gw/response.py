"""Response formatting (RFC 9051 §7): status lines, and strings as atoms, quoted or literals."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable

CRLF = b"\r\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Longer strings go out as literals: easier on clients than huge quoted strings.
_MAX_QUOTED = 1024


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"


def _is_quotable(data: bytes) -> bool:
    return len(data) <= _MAX_QUOTED and not any(c in (0, 0x0A, 0x0D) for c in data)


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(data: str | bytes) -> bytes:
    """``string``: quoted when it can be, else a literal (CR, LF, NUL, or long)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return quoted(raw) if _is_quotable(raw) else literal(raw)


def nstring(data: str | bytes | None) -> bytes:
    return b"NIL" if data is None else string(data)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(flags).encode("utf-8") + b")"


def text(s: str) -> bytes:
    """Human-readable text: one line, never CR/LF (they would end the response early)."""
    return s.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def untagged(body: bytes) -> bytes:
    return b"* " + body + CRLF


def tagged(tag: str, status: Status, message: str, code: str | None = None) -> bytes:
    head = f"{tag} {status.value} ".encode()
    if code:
        head += b"[" + text(code) + b"] "
    return head + text(message) + CRLF


def status_line(status: Status, message: str, code: str | None = None) -> bytes:
    """An untagged OK/NO/BAD/BYE-style line: ``* OK [code] text``."""
    return tagged("*", status, message, code)


def bye(message: str, code: str | None = None) -> bytes:
    head = b"* BYE "
    if code:
        head += b"[" + text(code) + b"] "
    return head + text(message) + CRLF


def internal_date(unix_seconds: int) -> bytes:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
    d = datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC)
    return (
        f'"{d.day:2d}-{_MONTHS[d.month - 1]}-{d.year:04d} '
        f'{d.hour:02d}:{d.minute:02d}:{d.second:02d} +0000"'
    ).encode()
