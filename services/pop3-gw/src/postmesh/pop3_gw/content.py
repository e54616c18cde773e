"""Stored message bytes -> the body of a RETR/TOP multi-line response, streamed chunk by chunk.

RFC 1939 §3: lines end in CRLF and a line beginning with "." gets one more "." prepended; the
response ends with ".\\r\\n" on a line of its own. The store keeps messages with CRLF as received
over SMTP; a bare LF that slipped in is normalised to CRLF here. TOP (§7) sends the header, the
blank line, then at most N body lines.
"""

from __future__ import annotations

import re

# An LF not preceded by CR: normalised to CRLF.
_BARE_LF = re.compile(rb"(?<!\r)\n")

# RFC 1939 §3: the end of a multi-line response.
TERMINATOR = b".\r\n"

# A line longer than this is passed on in pieces instead of being held whole.
_MAX_PENDING = 64 * 1024


class MessageEncoder:
    def __init__(self, body_lines: int | None = None) -> None:
        self._pending = bytearray()
        # True when the next byte we emit starts a line (the only place stuffing applies).
        self._line_start = True
        self._in_body = False
        self._body_left = body_lines
        # Set once TOP has sent all it should: the rest of the message need not be read.
        self.done = False

    def _begin_line(self) -> bool:
        """Account for a new line; False when TOP's body-line budget is spent."""
        if self._body_left is not None and self._in_body:
            if self._body_left <= 0:
                self.done = True
                return False
            self._body_left -= 1
        return True

    def _line(self, out: bytearray, line: bytes | bytearray) -> None:
        whole = self._line_start
        if whole:
            if not self._begin_line():
                return
            if line.startswith(b"."):
                out += b"."
        out += line
        out += b"\r\n"
        self._line_start = True
        if whole and not line:
            self._in_body = True  # RFC 5322 §2.1: the first empty line ends the header

    def _whole_lines(self, out: bytearray) -> None:
        """RETR's fast path: every complete line in the buffer at once, with C-speed bytes
        operations instead of a Python loop per line (no line budget to count)."""
        buf = self._pending
        last = buf.rfind(b"\n")
        if last < 0:
            return
        block = bytes(buf[: last + 1])
        del buf[: last + 1]
        if block.count(b"\n") != block.count(b"\r\n"):
            block = _BARE_LF.sub(b"\r\n", block)
        if self._line_start and block.startswith(b"."):
            out += b"."
        out += block.replace(b"\n.", b"\n..")
        self._line_start = True

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        buf = self._pending
        buf += data
        out = bytearray()
        start = 0
        if self._body_left is None:
            self._whole_lines(out)
        while not self.done:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
            self._line(out, buf[start:end])
            start = nl + 1
        if self.done:
            buf.clear()
            return bytes(out)
        del buf[:start]
        if len(buf) > _MAX_PENDING:
            # Keep a trailing CR back: it may pair with the LF of the next chunk.
            cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
            if self._line_start:
                if not self._begin_line():
                    buf.clear()
                    return bytes(out)
                if buf.startswith(b"."):
                    out += b"."
            out += buf[:cut]
            del buf[:cut]
            self._line_start = False
        return bytes(out)

    def finish(self) -> bytes:
        """What remains, ending with a CRLF-terminated last line and the ".\\r\\n" terminator."""
        out = bytearray()
        if not self.done and (self._pending or not self._line_start):
            line = self._pending[:-1] if self._pending.endswith(b"\r") else self._pending
            self._line(out, line)
        self._pending.clear()
        out += TERMINATOR
        return bytes(out)


def encode_whole(data: bytes) -> list[bytes]:
    """A message held whole (RETR from the read-ahead window): the bytes MessageEncoder would
    send, terminator included, made with a few C-speed passes over the message instead of
    chunk by chunk; pieces for ``writelines`` (no copy to join them)."""
    if data and not data.endswith(b"\r\n"):
        # An unterminated last line (or a bare LF/CR at the end): the general path.
        encoder = MessageEncoder()
        return [encoder.feed(data), encoder.finish()]
    if data.count(b"\n") != data.count(b"\r\n"):
        data = _BARE_LF.sub(b"\r\n", data)
    body = data.replace(b"\n.", b"\n..")
    return [b".", body, TERMINATOR] if body.startswith(b".") else [body, TERMINATOR]
