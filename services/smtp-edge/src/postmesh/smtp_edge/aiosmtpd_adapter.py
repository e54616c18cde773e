"""Every use of aiosmtpd's internals, in one place (issue 9).

aiosmtpd gives us the connection, the command loop, line reading, STARTTLS and the idle timer;
we implement the commands. The members below are private in aiosmtpd (and one in asyncio's
StreamReader), so an upgrade may change them: :func:`check_compatibility` runs at import and
stops the service at start with a message naming what changed, and the unit test
``test_smtp_edge_aiosmtpd_adapter.py`` runs the same check plus a live session. aiosmtpd is
pinned to 1.4.x (>= 1.4.6 for the CVE fixes, see LIBRARIES.md)."""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiosmtpd
import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP

# What this module was written against; check_compatibility() is what decides.
TESTED_VERSIONS = ("1.4.6",)

# aiosmtpd.smtp.SMTP members we call or override, and what they must be.
_CLASS_MEMBERS: dict[str, str] = {
    "_handle_client": "coroutine",  # the command loop task (overridden to wrap it)
    "_timeout_cb": "function",  # idle timer expiry (overridden to say 421 first)
    "_reset_timeout": "function",  # (duration=None): restart the idle timer
    "smtp_STARTTLS": "coroutine",  # its TLS upgrade, which we keep
    "push": "coroutine",
    "connection_made": "function",
    "connection_lost": "function",
    "eof_received": "function",  # overridden: a half-close ends the session after the input
    "handle_exception": "coroutine",  # overridden: the end of input ends the command loop
    "command_size_limit": "int",
}
# Instance attributes set by SMTP.__init__ / connection_made that we read.
INSTANCE_MEMBERS = (
    "_handler_coroutine",
    "_reader",
    "_writer",
    "_timeout_handle",
    "_original_transport",
    "session",
    "transport",
)


# How long the replies to a client that closed its sending side may take to be read before the
# connection is dropped (the replies are then unread anyway).
CLOSE_GRACE_SECONDS = 30.0


class AiosmtpdIncompatible(RuntimeError):
    """The installed aiosmtpd no longer has the internals this adapter uses."""


def check_compatibility() -> None:
    problems: list[str] = []
    for name, kind in _CLASS_MEMBERS.items():
        member = getattr(SMTP, name, None)
        if member is None:
            problems.append(f"SMTP.{name} is gone")
        elif kind == "coroutine" and not inspect.iscoroutinefunction(member):
            problems.append(f"SMTP.{name} is no longer a coroutine function")
        elif kind == "function" and not callable(member):
            problems.append(f"SMTP.{name} is no longer callable")
        elif kind == "int" and not isinstance(member, int):
            problems.append(f"SMTP.{name} is no longer an int")
    reset = getattr(SMTP, "_reset_timeout", None)
    if reset is not None and "duration" not in inspect.signature(reset).parameters:
        problems.append("SMTP._reset_timeout lost its duration parameter")
    # A loop of its own: at import time (and in tests) there may be no current loop, and
    # StreamReader() without one falls back to the deprecated get_event_loop().
    probe_loop = asyncio.new_event_loop()
    try:
        reader = asyncio.StreamReader(loop=probe_loop)
    finally:
        probe_loop.close()
    if not isinstance(getattr(reader, "_buffer", None), bytearray):
        problems.append("asyncio.StreamReader._buffer is no longer a bytearray")
    if not isinstance(getattr(aiosmtpd.smtp, "BOGUS_LIMIT", None), int):
        problems.append("aiosmtpd.smtp.BOGUS_LIMIT is gone")
    if problems:
        raise AiosmtpdIncompatible(
            f"aiosmtpd {aiosmtpd.__version__} (tested: {', '.join(TESTED_VERSIONS)}): "
            + "; ".join(problems)
        )


check_compatibility()

# aiosmtpd hangs up after 5 unknown commands with "502 ... goodbye", where RFC 5321 §3.8 has a
# server close only after QUIT, a 421 or a timeout; the edge's own error limit (421 after
# POSTMESH_SMTP_MAX_ERRORS errors, as Postfix's smtpd_hard_error_limit) decides instead.
aiosmtpd.smtp.BOGUS_LIMIT = 1 << 62


class AdaptedSMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd's SMTP with its internals behind named methods; subclasses use only these."""

    def __init__(self, *, command_size_limits: Mapping[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # An instance dict: aiosmtpd's class-level one is shared and grows with every EHLO.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit, command_size_limits
        )

    # --- hooks for subclasses -------------------------------------------------------------------

    async def run_session(self, command_loop: Callable[[], Awaitable[None]]) -> None:
        """Wraps the whole session (greeting to close); call ``command_loop`` once."""
        await command_loop()

    def on_idle_timeout(self) -> None:
        """Called before aiosmtpd closes an idle connection."""

    def on_end_of_input(self) -> None:
        """Called when the client's last byte has been read (it closed its side): no reply
        may follow but what is already written."""

    async def on_error(self, error: Exception) -> str:
        """The reply to a command that raised ``error``."""
        return await super().handle_exception(error)  # type: ignore[no-any-return]

    # --- overrides of aiosmtpd internals ---------------------------------------------------------

    async def _handle_client(self) -> None:
        await self.run_session(super()._handle_client)

    def eof_received(self) -> bool | None:
        """The client closed its sending side (a half-close, as an MTA may after QUIT or after
        pipelining a whole transaction): what it sent before is still read and answered, RFC
        2920 §3.2 (the input buffer is never lost). aiosmtpd cancels the session here, which
        dropped those commands, or a message's 250 after it was queued (then sent twice).
        Over TLS a half-close cannot carry replies; aiosmtpd's way applies."""
        if self.session is None or self.session.ssl is not None:
            return super().eof_received()  # type: ignore[no-any-return]
        # StreamReaderProtocol's: the reader ends after its buffer; True keeps the transport
        # open for the replies.
        return asyncio.StreamReaderProtocol.eof_received(self)

    async def handle_exception(self, error: Exception) -> str:
        if not isinstance(error, asyncio.IncompleteReadError):
            return await self.on_error(error)
        # The command reader found the end of the input: close once the replies are written
        # (connection_lost then cancels this), or drop the connection if they are not read.
        self.on_end_of_input()
        transport = self.transport
        if transport is not None:
            transport.close()
            await asyncio.sleep(CLOSE_GRACE_SECONDS)
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
        await asyncio.sleep(CLOSE_GRACE_SECONDS)  # aiosmtpd's loop must not spin meanwhile
        return ""

    def _timeout_cb(self) -> None:
        self.on_idle_timeout()
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # --- named access to the internals -----------------------------------------------------------

    def starttls_completed(self) -> bool:
        """Call in connection_made before super(): True for the TLS transport after STARTTLS
        (aiosmtpd calls connection_made a second time then)."""
        return self._original_transport is not None and self.transport is not None

    @property
    def peer(self) -> Any:
        return self.session.peer if self.session is not None else None

    def set_peer(self, peer: Any) -> None:
        """The client a PROXY header named. aiosmtpd's annotation says str, but it stores the
        peername tuple, as here."""
        assert self.session is not None
        self.session.peer = peer

    def set_greeted(self, hostname: str, esmtp: bool) -> None:
        assert self.session is not None
        self.session.host_name = hostname
        self.session.extended_smtp = esmtp

    async def read_line(self) -> bytes:
        """One line including its LF; raises ValueError past the line length limit; a line
        without LF means the connection closed."""
        line: bytes = await self._reader.readline()
        return line

    async def read_some(self, limit: int) -> bytes:
        data: bytes = await self._reader.read(limit)
        return data

    async def read_exactly(self, n: int) -> bytes:
        """Raises asyncio.IncompleteReadError when the connection closes first."""
        data: bytes = await self._reader.readexactly(n)
        return data

    def unread(self, data: bytes) -> None:
        """Give bytes read past the end of DATA (pipelined commands, RFC 2920) back to the
        command reader."""
        self._reader._buffer[:0] = data  # type: ignore[attr-defined]

    def write_now(self, data: bytes) -> None:
        """Write outside the command loop (final words before a close)."""
        self._writer.write(data)

    def stop_idle_timer(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    def restart_idle_timer(self, seconds: float | None = None) -> None:
        self._reset_timeout(seconds)

    async def push_raw(self, reply: str) -> None:
        await super().push(reply)
