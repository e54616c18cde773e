"""Reading CRLF-terminated command lines with a length limit from an asyncio stream."""

from __future__ import annotations

import asyncio
from typing import Any


class LineTooLong(Exception):
    """The line exceeded the limit; the reader skips the rest of it before the next line.

    ``fatal`` when the client kept sending far past the limit without any line end: a client
    that is not speaking POP3 at all, to be disconnected.
    """

    def __init__(self, fatal: bool = False) -> None:
        super().__init__("line too long")
        self.fatal = fatal


# How far past the limit an unterminated line may run before the client is disconnected.
_SKIP_FACTOR = 64


class ConnectionClosed(Exception):
    """The client closed the connection."""


class LineReader:
    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = bytearray()
        self._skipping = False
        self._skipped = 0

    async def readline(self, limit: int) -> bytes:
        """The next line without its line end (CRLF, or a bare LF leniently).

        ``limit`` counts octets including the CRLF. A longer line raises :class:`LineTooLong`
        as soon as ``limit`` octets arrived without an LF, so memory stays bounded; the rest of
        that line is skipped, up to ``_SKIP_FACTOR * limit`` octets, after which the error is
        fatal.
        """
        while True:
            if self._skipping:
                nl = self._buf.find(b"\n")
                if nl >= 0:
                    del self._buf[: nl + 1]
                    self._skipping = False
                else:
                    self._skipped += len(self._buf)
                    self._buf.clear()
                    if self._skipped > _SKIP_FACTOR * limit:
                        raise LineTooLong(fatal=True)
            if not self._skipping:
                nl = self._buf.find(b"\n")
                if nl >= 0:
                    line = bytes(self._buf[:nl])
                    del self._buf[: nl + 1]
                    if nl + 1 > limit:
                        raise LineTooLong
                    return line[:-1] if line.endswith(b"\r") else line
                if len(self._buf) >= limit:
                    self._skipped = len(self._buf)
                    self._buf.clear()
                    self._skipping = True
                    raise LineTooLong
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionClosed
            self._buf += data

    def discard_buffered(self) -> int:
        """Drop input received but not yet read; returns how many octets were dropped.

        Used right before a TLS handshake (STLS): anything the client sent after the command in
        clear text must not be taken as if it had come over TLS (the CVE-2011-0411 class of
        command injection, RFC 2595 §4).
        """
        dropped = len(self._buf)
        self._buf.clear()
        self._skipping = False
        # asyncio's StreamReader may hold bytes that arrived after our last read.
        inner: Any = getattr(self._reader, "_buffer", None)
        if isinstance(inner, bytearray):
            dropped += len(inner)
            inner.clear()
        return dropped
