"""The commands and replies of an outbound SMTP session after EHLO (and STARTTLS), on a reply
reader of our own that keeps every reply, so a group of commands can be pipelined (RFC 2920).

aiosmtplib connects, reads the greeting and does EHLO and STARTTLS (RFC 3207); the session then
moves the transport to a :class:`Wire`. aiosmtplib's protocol holds one reply at a time and
drops what arrives while a parsed reply waits to be read, so the replies to MAIL, RCPT and DATA
sent together would be lost there. Here each complete reply is queued in order until it is
read, and a closed connection is reported only after the replies that came before it.

Errors are aiosmtplib's exceptions (SMTPServerDisconnected, SMTPReadTimeoutError,
SMTPResponseException), so the relay treats a broken connection as it always has."""

from __future__ import annotations

import asyncio
import re
from collections import deque

from aiosmtplib import (
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
)

# A reply line and a whole (multiline) reply, as aiosmtplib bounds them.
MAX_LINE = 8192
MAX_REPLY = MAX_LINE * 4
# A command may not carry a control character: CR or LF would end it early (injection).
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def command_line(*parts: bytes) -> bytes:
    """One command line; ValueError when a part carries a control character."""
    for part in parts:
        if CONTROL.search(part):
            raise ValueError("command carries a control character")
    return b" ".join(parts) + b"\r\n"


class Wire(asyncio.Protocol):
    """The replies of one connection, in order (RFC 5321 §4.2, RFC 2920 §3.2)."""

    def __init__(self, transport: asyncio.Transport, timeout: float | None) -> None:
        self.transport = transport
        self.timeout = timeout
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    def take_over(cls, transport: asyncio.BaseTransport, timeout: float | None) -> Wire:
        """Read this transport's replies from now on (nothing is pending at the hand-over:
        the last reply, to EHLO, was read)."""
        assert isinstance(transport, asyncio.Transport)
        wire = cls(transport, timeout)
        transport.set_protocol(wire)
        return wire

    @property
    def connected(self) -> bool:
        return self._failure is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.connected:
            raise self._failure or SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def reply(self) -> SMTPResponse:
        """The next reply; raises once the replies before a closed connection are read."""
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                # Not wait_for: on Python 3.11 it drops a cancellation that meets the reply.
                async with asyncio.timeout(self.timeout):
                    await self._waiter
            except TimeoutError:
                self.close()
                raise SMTPReadTimeoutError("Timed out waiting for server response") from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    async def command(self, *parts: bytes) -> SMTPResponse:
        self.write(command_line(*parts))
        return await self.reply()

    def close(self) -> None:
        self._fail(SMTPServerDisconnected("Connection closed"))
        self.transport.close()

    def _fail(self, failure: Exception) -> None:
        if self._failure is None:
            self._failure = failure
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
        except SMTPResponseException as e:
            self._fail(e)
            self.transport.close()
        if self._replies:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        failure = SMTPServerDisconnected("Connection lost")
        failure.__cause__ = exc
        self._fail(failure)

    def _parse(self) -> SMTPResponse | None:
        """One complete reply from the front of the buffer, or None. RFC 5321 §4.2: lines of
        "ddd-text" continue the reply, "ddd text" (or "ddd") ends it."""
        offset = 0
        code = 0
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n", offset)
            if end < 0:
                if len(self._buffer) > MAX_REPLY or len(self._buffer) - offset > MAX_LINE:
                    raise SMTPResponseException(-1, "Response too long")
                return None
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > MAX_LINE:
                raise SMTPResponseException(-1, "Response too long")
            head = line[:3]
            if not head.isdigit():
                text = line.decode("utf-8", "replace").strip()
                raise SMTPResponseException(-1, f"Malformed SMTP response line: {text}")
            code = int(head)
            lines.append(line[4:].strip(b" \t\r\n"))
            offset = end + 1
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
