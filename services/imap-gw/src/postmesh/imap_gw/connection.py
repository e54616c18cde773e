"""The wire: reads whole commands (lines and literals) under size limits and timeouts, writes
responses, and upgrades to TLS. Knows the literal syntax, nothing of command semantics."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

from postmesh.imap_gw import response
from postmesh.imap_gw.parser.commands import NOT_YET, command_name, is_supported, parse_tag
from postmesh.imap_gw.parser.cursor import LITERAL_AT_END
from postmesh.imap_gw.response import Status

# How long a closing connection's leftover input is read and dropped (see Connection.close).
_LINGER_SECONDS = 2.0


class ClientGone(Exception):
    """The client closed the connection (possibly in the middle of a command or literal)."""


class CommandRejected(Exception):
    """The command was refused while it was being read; ``reply`` is the full response line.
    The connection stays usable: everything the client sent for the command has been consumed."""

    def __init__(self, reply: bytes) -> None:
        super().__init__(reply.decode("ascii", "replace").strip())
        self.reply = reply
        self.bad = b" BAD " in reply


class ProtocolAbuse(Exception):
    """Input the server cannot resynchronise from; the session ends with ``* BYE``."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_line: int,
        max_literal: int,
        max_command: int,
        timeout: float,
        max_preauth_literal: int | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self.max_preauth_literal = min(max_preauth_literal or max_literal, max_literal)
        # Set by the session: before login, every literal is capped at max_preauth_literal.
        self.authenticated = False
        # Seconds a read (or a blocked write) may wait: the session sets it per state.
        self.timeout = timeout
        self.tls_active = writer.get_extra_info("ssl_object") is not None
        peer = writer.get_extra_info("peername")
        self.peer_host: str | None = peer[0] if isinstance(peer, tuple) else None
        self._held: list[bytes] = []  # see hold()

    # -- reading --------------------------------------------------------------------------------
    async def _read_line(self) -> bytes:
        """One line including its LF. An overlong line is consumed up to its LF and refused."""
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await self.reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    pass
                head = await self.reader.read(self.max_line)
                discarded = len(head)
                while True:
                    try:
                        await self.reader.readuntil(b"\n")
                        break
                    except asyncio.LimitOverrunError:
                        chunk = await self.reader.read(self.max_line)
                        discarded += len(chunk)
                        if discarded > self.max_command:
                            raise ProtocolAbuse("Command line too long", "TOOBIG") from None
        except asyncio.IncompleteReadError as e:
            raise ClientGone("connection closed by client") from e
        except (ConnectionError, ssl.SSLError) as e:
            raise ClientGone(str(e)) from e
        raise LineTooLong(head)

    async def _read_exactly(self, size: int) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.reader.readexactly(size)
        except asyncio.IncompleteReadError as e:
            raise ClientGone("connection closed by client in a literal") from e
        except (ConnectionError, ssl.SSLError) as e:
            raise ClientGone(str(e)) from e

    async def _discard(self, size: int) -> None:
        while size > 0:
            chunk = await self._read_exactly(min(size, 64 * 1024))
            size -= len(chunk)

    async def read_line(self) -> bytes:
        """A continuation line (AUTHENTICATE responses), without its line end."""
        try:
            line = await self._read_line()
        except LineTooLong as e:
            raise ProtocolAbuse("Line too long", "TOOBIG") from e
        return line.rstrip(b"\r\n")

    def literal_limit(self) -> int:
        """The largest literal a command may carry now (APPEND's message is streamed and
        limited by its handler instead)."""
        return self.max_literal if self.authenticated else self.max_preauth_literal

    def _literal_problem(self, first: bytes, size: int, total: int) -> bytes | None:
        """A reason to refuse a command before its literal is read (RFC 7888 §4: a server may
        answer a synchronizing literal with a tagged response instead of "+")."""
        tag = parse_tag(first)
        if tag is None:
            return response.status_line(Status.BAD, "Missing or invalid tag")
        name = command_name(first)
        if name is None or not is_supported(name):
            if name in NOT_YET:
                return response.tagged(tag, Status.NO, f"{name} is not supported yet", "CANNOT")
            return response.tagged(tag, Status.BAD, "Unknown command")
        if size > self.literal_limit() or total + size > self.max_command:
            return response.tagged(tag, Status.BAD, "Literal too large", "TOOBIG")
        return None

    async def read_command(
        self, stream: Callable[[bytes], bool] | None = None, *, after: bytes | None = None
    ) -> bytes | LiteralAhead:
        """One whole command without its final line end, literals inline as ``{n}`` CRLF data.

        ``stream(prefix)`` says whether the literal announced at the end of ``prefix`` (the
        command so far) is left to the command's handler (APPEND's message): then the command
        is returned as a :class:`LiteralAhead` before that literal is read. ``after`` is the
        command before a streamed literal, when reading the rest of it.

        Raises ClientGone, TimeoutError, CommandRejected (answer it and read on) or ProtocolAbuse.
        """
        parts: list[bytes] = []
        first: bytes | None = after
        total = 0
        rejection: bytes | None = None
        while True:
            try:
                line = await self._read_line()
            except LineTooLong as e:
                tag = parse_tag(first or e.head)
                msg, code = "Command line too long", "TOOBIG"
                if tag is None:
                    raise CommandRejected(response.status_line(Status.BAD, msg, code)) from None
                raise CommandRejected(response.tagged(tag, Status.BAD, msg, code)) from None
            if first is None:
                first = line
            total += len(line)
            m = LITERAL_AT_END.search(line)
            if m is None:
                if rejection is not None:
                    raise CommandRejected(rejection)
                parts.append(line[:-2] if line.endswith(b"\r\n") else line[:-1])
                return b"".join(parts)
            size, synchronizing = int(m.group(1)), not m.group(2)
            if rejection is None and stream is not None:
                prefix = b"".join(parts) + line[: m.start()]
                if stream(prefix):
                    return LiteralAhead(self, prefix, size, synchronizing)
            if rejection is None:
                rejection = self._literal_problem(first, size, total)
            if rejection is not None:
                if synchronizing:
                    # The client sends nothing more for this command (RFC 9051 §7.5).
                    raise CommandRejected(rejection)
                if size > self.max_literal:
                    # A LITERAL+ client sends the data anyway; too much to swallow.
                    raise ProtocolAbuse("Literal too large", "TOOBIG")
                await self._discard(size)
                continue
            parts.append(line[: m.start()] + b"{%d}\r\n" % size)
            if synchronizing:
                await self.write(b"+ Ready for literal data\r\n")
            parts.append(await self._read_exactly(size))
            total += size

    # -- writing --------------------------------------------------------------------------------
    def hold(self, data: bytes) -> None:
        """Send ``data`` with the next write: a command's last untagged responses go out with
        its tagged reply, in one send instead of two (the client reads them together)."""
        self._held.append(data)

    def _with_held(self, data: bytes) -> bytes:
        if not self._held:
            return data
        self._held.append(data)
        data = b"".join(self._held)
        self._held.clear()
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data`` (after anything held); waits (up to the timeout) while the client is
        not reading."""
        self.writer.write(self._with_held(data))
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (ConnectionError, ssl.SSLError) as e:
            raise ClientGone(str(e)) from e

    def write_nowait(self, data: bytes) -> None:
        """Queue ``data`` without waiting (for a last word when the session is being torn down)."""
        if not self.writer.is_closing():
            self.writer.write(self._with_held(data))

    def drop_buffered_input(self) -> int:
        """Forget input already received but not read (STARTTLS: anything pipelined after the
        command arrived in cleartext and must not be taken as sent under TLS)."""
        buf = getattr(self.reader, "_buffer", None)
        if isinstance(buf, bytearray) and buf:
            n = len(buf)
            buf.clear()
            return n
        return 0

    async def start_tls(self, context: ssl.SSLContext) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.start_tls(context)
        except (ConnectionError, ssl.SSLError, OSError) as e:
            raise ClientGone(f"TLS handshake failed: {e}") from e
        self.tls_active = True

    async def close(self, *, discard_input: bool = False) -> None:
        """Close; ``discard_input`` after a BYE to a client that is still sending (an endless
        line): closing with unread input makes the kernel send RST, which can destroy the BYE
        before the client reads it. So half-close, and read and drop what is left for a moment
        (a "lingering close", as web servers do)."""
        try:
            if discard_input and not self.tls_active and self.writer.can_write_eof():
                self.writer.write_eof()
                async with asyncio.timeout(_LINGER_SECONDS):
                    while await self.reader.read(64 * 1024):
                        pass
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
            pass
        try:
            self.writer.close()
            async with asyncio.timeout(5):
                await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
            pass


class LiteralAhead:
    """A command stopped before a literal its handler reads itself: APPEND's message is passed
    on chunk by chunk as it arrives (RFC 9051 §6.3.12), never held whole in memory.

    ``prefix`` is the command up to the literal's ``{n}``. The handler either reads the literal
    with :meth:`chunks` (a synchronizing one is accepted with "+" first) and then the rest of
    the command with :meth:`rest`, or refuses it with :meth:`skip`.
    """

    def __init__(self, conn: Connection, prefix: bytes, size: int, synchronizing: bool) -> None:
        self.conn = conn
        self.prefix = prefix
        self.size = size
        self.synchronizing = synchronizing
        self.remaining = size
        self.accepted = not synchronizing  # the client is sending the data
        self.finished = False  # the whole command has been read

    async def chunks(self, chunk_bytes: int) -> AsyncIterator[bytes]:
        if not self.accepted:
            await self.conn.write(b"+ Ready for literal data\r\n")
            self.accepted = True
        while self.remaining > 0:
            data = await self.conn._read_exactly(min(self.remaining, chunk_bytes))
            self.remaining -= len(data)
            yield data

    async def rest(self) -> bytes:
        """What follows the literal up to the end of the command (its own literals inline)."""
        assert self.remaining == 0
        rest = await self.conn.read_command(after=self.prefix)
        self.finished = True
        assert isinstance(rest, bytes)
        return rest

    async def skip(self, max_discard: int) -> None:
        """Refuse the literal: a synchronizing one not yet accepted is never sent (RFC 9051
        §7.5); otherwise what is left of it, up to ``max_discard`` octets, and the rest of the
        command are read and dropped."""
        if self.finished or not self.accepted:
            self.finished = True
            return
        if self.remaining > max_discard:
            raise ProtocolAbuse("Literal too large", "TOOBIG")
        await self.conn._discard(self.remaining)
        self.remaining = 0
        try:
            await self.rest()
        except CommandRejected:
            pass  # the command is being refused anyway
        self.finished = True


class LineTooLong(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("line too long")
        self.head = head
