"""Low-level tokens of the IMAP grammar (RFC 9051 §9) over one complete command buffer.

The connection hands over the whole command with every literal already read in, laid out as on
the wire (``{n}`` CRLF then n octets), so parsing is a pure function of bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postmesh.imap_gw.parser.errors import ParseError

# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
_LIST_WILDCARDS = frozenset(b"%*")
LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}\r\n")
_NUMBER = re.compile(rb"[0-9]+")

MAX_NUMBER = 2**32 - 1  # number = 1*DIGIT, unsigned 32-bit (RFC 9051 §9)


def is_atom_char(c: int) -> bool:
    # CTL is 0x00-0x1f and 0x7f; 8-bit octets are not CHAR either.
    return 0x20 < c < 0x7F and c not in _ATOM_SPECIALS


def is_astring_char(c: int) -> bool:
    return is_atom_char(c) or c == ord("]")


def is_list_char(c: int) -> bool:
    return is_astring_char(c) or c in _LIST_WILDCARDS


class Cursor:
    """A read position in a command buffer; every method consumes what it returns."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- primitives -----------------------------------------------------------------------------
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def peek_is(self, ch: bytes) -> bool:
        return self.data.startswith(ch, self.pos)

    def error(self, what: str) -> ParseError:
        if self.at_end():
            return ParseError(f"{what}, found end of command")
        # backslashreplace: the reason stays ASCII (resp-text, RFC 9051 §9) whatever was sent.
        found = self.data[self.pos : self.pos + 10].decode("ascii", "backslashreplace")
        return ParseError(f"{what} at position {self.pos}, found {found!r}")

    def expect(self, token: bytes) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.error(f"expected {token.decode()!r}")
        self.pos += len(token)

    def expect_sp(self) -> None:
        if self.peek() != 0x20:
            raise self.error("expected a single space")
        self.pos += 1

    def skip(self, token: bytes) -> bool:
        if self.data.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect_end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected data after command")

    def take_while(self, pred: Callable[[int], bool]) -> bytes:
        start = self.pos
        data, n = self.data, len(self.data)
        while self.pos < n and pred(data[self.pos]):
            self.pos += 1
        return data[start : self.pos]

    # -- grammar tokens -------------------------------------------------------------------------
    def atom(self, what: str = "an atom") -> str:
        token = self.take_while(is_atom_char)
        if not token:
            raise self.error(f"expected {what}")
        return token.decode("ascii")

    def number(self, *, nonzero: bool = False) -> int:
        m = _NUMBER.match(self.data, self.pos)
        if not m:
            raise self.error("expected a number")
        value = int(m.group())
        if value > MAX_NUMBER or (nonzero and (value == 0 or m.group().startswith(b"0"))):
            raise self.error("number out of range")
        self.pos = m.end()
        return value

    def quoted(self) -> bytes:
        """quoted = DQUOTE *QUOTED-CHAR DQUOTE; backslash escapes only ``"`` and ``\\``.
        8-bit octets pass (IMAP4rev2 quoted strings carry UTF-8, RFC 9051 §4.3)."""
        self.expect(b'"')
        out = bytearray()
        data, n = self.data, len(self.data)
        while True:
            if self.pos >= n:
                raise ParseError("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= n or data[self.pos] not in (0x22, 0x5C):
                    raise ParseError("invalid escape in quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif c in (0x00, 0x0A, 0x0D):
                raise ParseError("CR, LF or NUL in quoted string")
            else:
                out.append(c)

    def literal(self) -> bytes:
        """literal = "{" number64 ["+"] "}" CRLF *CHAR8 (RFC 9051 §4.3, LITERAL+ RFC 7888)."""
        m = _LITERAL.match(self.data, self.pos)
        if not m:
            raise self.error("expected a literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise ParseError("literal shorter than announced")
        self.pos = start + size
        return self.data[start : self.pos]

    def string(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c == 0x7B:
            return self.literal()
        raise self.error("expected a quoted string or a literal")

    def astring(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        token = self.take_while(is_astring_char)
        if not token:
            raise self.error(f"expected {what}")
        return token

    def list_mailbox(self) -> bytes:
        """list-mailbox = 1*list-char / string: an astring that may contain % and *."""
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        token = self.take_while(is_list_char)
        if not token:
            raise self.error("expected a mailbox pattern")
        return token

    def paren_list(self, item: str = "atom") -> list[str]:
        """A parenthesised, space-separated list of atoms, e.g. selection options."""
        self.expect(b"(")
        items: list[str] = []
        if self.skip(b")"):
            return items
        while True:
            items.append(self.atom(item))
            if self.skip(b")"):
                return items
            self.expect_sp()
