"""One IMAP session: the state machine, the command loop and what every command shares."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postmesh.common import sasl
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.common.net import plaintext_auth_allowed
from postmesh.imap_gw import metrics, mutf7, response
from postmesh.imap_gw.backend import Authenticator, MailStore
from postmesh.imap_gw.connection import (
    ClientGone,
    CommandRejected,
    Connection,
    LiteralAhead,
    ProtocolAbuse,
)
from postmesh.imap_gw.limits import UserSessions
from postmesh.imap_gw.parser import Command, NotSupported, ParseError, parse_command
from postmesh.imap_gw.parser.append import is_message_literal, parse_append_head
from postmesh.imap_gw.parser.commands import command_name, is_supported
from postmesh.imap_gw.response import Status
from postmesh.imap_gw.saved_search import SavedSearch
from postmesh.imap_gw.settings import ImapSettings
from postmesh.imap_gw.state import SelectedMailbox, State

log = get_logger(__name__)

DELIMITER = "/"


@dataclass
class Result:
    """The tagged response of a command; ``after`` runs once it is sent (STARTTLS)."""

    status: Status
    message: str
    code: str | None = None
    after: Callable[[], Awaitable[None]] | None = None


def ok(message: str, code: str | None = None) -> Result:
    return Result(Status.OK, message, code)


def no(message: str, code: str | None = None) -> Result:
    return Result(Status.NO, message, code)


def bad(message: str, code: str | None = None) -> Result:
    return Result(Status.BAD, message, code)


class MailboxNameError(ValueError):
    pass


class SessionRegistry(Protocol):
    """Where sessions with a selected mailbox are found by user (``mailbox_events.py``)."""

    @property
    def live(self) -> bool: ...

    def add(self, user: str, session: Session) -> None: ...

    def discard(self, user: str, session: Session) -> None: ...


class IdleTimeout(Exception):
    """The client stayed in IDLE past the autologout time."""


class Session:
    def __init__(
        self,
        conn: Connection,
        settings: ImapSettings,
        store: MailStore,
        auth: Authenticator,
        tls_context: ssl.SSLContext | None,
        listener: str,
        registry: SessionRegistry | None = None,
        user_sessions: UserSessions | None = None,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.store = store
        self.auth = auth
        self.tls_context = tls_context
        self.listener = listener
        self.registry = registry
        self.user_sessions = user_sessions
        # Whether this session is counted in user_sessions (released when it ends).
        self._counted: str | None = None
        self.id = uuid.uuid4().hex[:16]
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.selected: SelectedMailbox | None = None
        # ENABLE IMAP4rev2 (RFC 9051 §6.3.1): UTF-8 names, no RECENT; otherwise IMAP4rev1 rules.
        self.rev2 = False
        # ENABLE UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names without IMAP4rev2.
        self.utf8 = False
        # RFC 7162: CONDSTORE by ENABLE or a CONDSTORE-enabling command; QRESYNC by ENABLE only.
        self.condstore = False
        self.qresync = False
        # Set while in IDLE: a mailbox event wakes it (``mailbox_changed``).
        self.wake: asyncio.Event | None = None
        self.bad_commands = 0
        self.auth_failures = 0
        # RFC 5182 $: the last SEARCH ... RETURN (SAVE) result.
        self.saved_search = SavedSearch()
        # The session ends on abuse while the client may still be sending (Connection.close).
        self._discard_input = False
        # APPEND's message literal, while its command runs (``commands/append.py``).
        self.literal: LiteralAhead | None = None
        # The mailbox the last APPEND stored into: known to exist (``commands/append.py``).
        self.appended_to: str | None = None

    # -- facts ----------------------------------------------------------------------------------
    @property
    def peer_host(self) -> str:
        return self.conn.peer_host or ""

    @property
    def plaintext_auth_allowed(self) -> bool:
        return plaintext_auth_allowed(self.conn.peer_host, self.conn.tls_active)

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ENABLE", "UNSELECT", "NAMESPACE"]
        caps += ["ESEARCH", "SEARCHRES"]  # RFC 4731, RFC 5182
        if self.state is State.NOT_AUTHENTICATED:
            if not self.conn.tls_active and self.tls_context is not None:
                caps.append("STARTTLS")
            # SCRAM-SHA-256 always; PLAIN and LOGIN, which carry the password, only under TLS
            # or on loopback (postmesh.common.net.plaintext_auth_allowed).
            caps += [f"AUTH={m}" for m in sasl.offered(self.plaintext_auth_allowed)]
            if not self.plaintext_auth_allowed:
                # RFC 9051 §6.2.3: no LOGIN command until the connection is protected.
                caps.append("LOGINDISABLED")
        # RFC 2177, RFC 7162, RFC 4315, RFC 6855.
        caps += ["IDLE", "CONDSTORE", "QRESYNC", "UIDPLUS", "UTF8=ACCEPT"]
        # RFC 3348, RFC 5258, RFC 5819, RFC 6154, RFC 8438, RFC 2971, RFC 9208.
        caps += ["CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE"]
        caps += ["STATUS=SIZE"]
        caps += ["ID", "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"]
        caps += ["MOVE", f"APPENDLIMIT={self.settings.imap_max_message_bytes}"]  # RFC 6851, 7889
        caps.append("BINARY")  # RFC 3516
        # RFC 5256, RFC 5957.
        caps += ["SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"]
        return caps

    # -- output ---------------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        await self.conn.write(data)

    def hold(self, data: bytes) -> None:
        """``data`` goes out with the next write, at the latest the tagged reply: for a
        command's last output, when nothing waits on the client before it completes."""
        self.conn.hold(data)

    async def untagged(self, body: str | bytes) -> None:
        await self.conn.write(response.untagged(body.encode() if isinstance(body, str) else body))

    # -- mailbox names --------------------------------------------------------------------------
    def decode_mailbox(self, raw: bytes) -> str:
        """Client name -> store name: UTF-8 under IMAP4rev2, modified UTF-7 under IMAP4rev1
        (RFC 3501 §5.1.3); INBOX in any case is INBOX (RFC 9051 §5.1)."""
        try:
            if self.rev2 or self.utf8 or any(c > 0x7F for c in raw):
                name = raw.decode("utf-8")
            else:
                name = mutf7.decode(raw)
        except (UnicodeDecodeError, mutf7.MUtf7Error) as e:
            raise MailboxNameError(str(e)) from e
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise MailboxNameError("control character in mailbox name")
        if name.upper() == "INBOX":
            return "INBOX"
        if name.upper().startswith("INBOX" + DELIMITER):
            return "INBOX" + name[5:]
        return name

    def encode_mailbox(self, name: str) -> bytes:
        utf8 = self.rev2 or self.utf8
        return response.string(name.encode("utf-8") if utf8 else mutf7.encode(name))

    # -- the selected mailbox -------------------------------------------------------------------
    def select(self, sel: SelectedMailbox) -> None:
        """Enter the selected state on ``sel``; mailbox events for it now reach this session."""
        self.deselect()
        self.selected = sel
        self.state = State.SELECTED
        if self.registry is not None and self.user is not None:
            self.registry.add(self.user, self)

    def deselect(self) -> None:
        if self.selected is not None and self.registry is not None and self.user is not None:
            self.registry.discard(self.user, self)
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def mailbox_changed(self, mailbox: str, new_name: str = "") -> None:
        """A mailbox event for this user (called by the registry, never blocks): mark the
        selected mailbox for a resynchronisation and wake IDLE."""
        sel = self.selected
        if sel is None or mailbox != sel.name:
            return
        if new_name:
            sel.name = new_name  # renamed under us (RFC 9051 §6.3.6): same messages, new name
        sel.dirty = True
        if self.wake is not None:
            self.wake.set()

    def flags_changed(
        self, mailbox: str, uids: Sequence[int], flags: Sequence[str], modseq: int
    ) -> None:
        """A FLAGS_CHANGED event: ``uids`` now have exactly ``flags``, at ``modseq``. Nothing
        to resynchronise if the selected mailbox's model already says so (this session's own
        STORE, whose answer it has recorded): any other change has its own event."""
        sel = self.selected
        if sel is not None and mailbox == sel.name and sel.knows_flags(uids, flags, modseq):
            return
        self.mailbox_changed(mailbox)

    def messages_new(self, mailbox: str, uids: Sequence[int], modseq: int) -> None:
        """A MESSAGE_NEW event: ``uids`` were added at ``modseq``. Nothing to resynchronise if
        the selected mailbox's model already holds them (this session's own APPEND, whose
        answer it has recorded); otherwise as any change."""
        sel = self.selected
        if sel is not None and mailbox == sel.name and sel.knows_message(uids, modseq):
            return
        self.mailbox_changed(mailbox)

    def claim_user(self, user: str) -> bool:
        """Count this session for ``user`` at login; False beyond imap_max_sessions_per_user."""
        if self.user_sessions is None or self._counted == user:
            return True
        if not self.user_sessions.acquire(user):
            return False
        if self._counted is not None:  # an earlier login that failed after being counted
            self.user_sessions.release(self._counted)
        self._counted = user
        return True

    async def say_bye(self, message: str, code: str | None = None) -> None:
        """End the session after the current command (e.g. the selected mailbox is gone)."""
        await self._bye(message, code)

    # -- the loop -------------------------------------------------------------------------------
    def _timeout(self) -> float:
        if self.state is State.NOT_AUTHENTICATED:
            return self.settings.imap_preauth_timeout_seconds
        return self.settings.imap_idle_timeout_seconds

    async def run(self) -> None:
        bind_log_context(session_id=self.id)
        metrics.SESSIONS_ACTIVE.inc()
        metrics.SESSIONS_TOTAL.labels(self.listener).inc()
        log.info(
            "session started",
            extra=kv(peer=self.peer_host, listener=self.listener, tls=self.conn.tls_active),
        )
        reason = "logout"
        try:
            caps = " ".join(self.capabilities())
            await self.send(response.status_line(Status.OK, "Postmesh ready", f"CAPABILITY {caps}"))
            reason = await self._loop()
        except ClientGone as e:
            reason = f"client gone: {e}"
        except TimeoutError:
            reason = "write timeout"
        except Exception:
            # A bug: the stream may be mid-response, so end the session rather than go on.
            log.exception("session failed")
            reason = "internal error"
            self.conn.write_nowait(response.bye("Internal server error", "SERVERBUG"))
        except asyncio.CancelledError:
            # Server shutdown (RFC 9051 §7.1.5: BYE before closing).
            reason = "server shutdown"
            self.conn.write_nowait(response.bye("Server shutting down"))
            raise
        finally:
            self.deselect()
            if self._counted is not None and self.user_sessions is not None:
                self.user_sessions.release(self._counted)
                self._counted = None
            metrics.SESSIONS_ACTIVE.dec()
            await self.conn.close(discard_input=self._discard_input)
            log.info("session ended", extra=kv(reason=reason, user=self.user))

    async def _loop(self) -> str:
        while self.state is not State.LOGOUT:
            self.conn.timeout = self._timeout()
            self.conn.authenticated = self.state is not State.NOT_AUTHENTICATED
            try:
                raw = await self.conn.read_command(is_message_literal)
            except TimeoutError:
                await self._bye("Autologout; idle for too long")
                return "idle timeout"
            except ClientGone as e:
                return f"client disconnected: {e}"
            except ProtocolAbuse as e:
                await self._bye(e.message, e.code)
                self._discard_input = True
                return f"protocol abuse: {e.message}"
            except CommandRejected as e:
                await self.send(e.reply)
                self.bad_commands = self.bad_commands + 1 if e.bad else 0
            else:
                try:
                    if isinstance(raw, LiteralAhead):
                        await self._handle_streamed(raw)
                    else:
                        await self._handle(raw)
                except IdleTimeout:
                    await self._bye("Autologout; idle for too long")
                    return "idle timeout"
            if self.bad_commands >= self.settings.imap_max_bad_commands:
                await self._bye("Too many invalid IMAP commands")
                return "too many bad commands"
            if self.auth_failures >= self.settings.imap_max_auth_failures:
                await self._bye("Too many authentication failures")
                return "too many authentication failures"
        return "logout"

    async def _handle(self, raw: bytes) -> None:
        start = time.monotonic()
        try:
            cmd = parse_command(raw)
        except ParseError as e:
            if e.clears_saved:
                self.saved_search.clear()
            name = command_name(raw) or ""
            label = name if is_supported(name) else "UNKNOWN"
            log.debug("bad command", extra=kv(command=label, error=e.message))
            result = (
                no(e.message, e.code) if isinstance(e, NotSupported) else bad(e.message, e.code)
            )
            await self._finish(e.tag or "*", label, result, start)
            return
        await self.execute(cmd, start)

    async def _handle_streamed(self, ahead: LiteralAhead) -> None:
        """A command whose literal its handler reads (APPEND): answered only once all of the
        command has been read or its literal refused."""
        start = time.monotonic()
        try:
            cmd = parse_append_head(ahead.prefix, ahead.size, ahead.synchronizing)
        except ParseError as e:
            await ahead.skip(self.conn.max_literal)
            await self._finish(e.tag or "*", "APPEND", bad(e.message, e.code), start)
            return
        from postmesh.imap_gw.commands import dispatch  # the commands import this module

        self.literal = ahead
        try:
            result = await dispatch(self, cmd)
            # Not read by the handler (wrong state, refused): drop what the client sends.
            authenticated = self.state is not State.NOT_AUTHENTICATED
            limit = self.settings.imap_max_message_bytes if authenticated else self.conn.max_literal
            await ahead.skip(limit)
        except CommandRejected as e:
            await self.send(e.reply)
            self.bad_commands = self.bad_commands + 1 if e.bad else 0
            return
        except ProtocolAbuse as e:
            await self._bye(e.message, e.code)
            return
        finally:
            self.literal = None
        await self._finish(cmd.tag, cmd.label, result, start)

    async def _bye(self, message: str, code: str | None = None) -> None:
        self.state = State.LOGOUT
        try:
            await self.send(response.bye(message, code))
        except (ClientGone, TimeoutError):
            pass

    async def execute(self, cmd: Command, start: float) -> None:
        from postmesh.imap_gw.commands import dispatch  # the commands import this module

        result = await dispatch(self, cmd)
        await self._finish(cmd.tag, cmd.label, result, start)
        if result.after is not None:
            await result.after()

    async def _finish(self, tag: str, command: str, result: Result, start: float) -> None:
        metrics.COMMANDS_TOTAL.labels(command, result.status.value.lower()).inc()
        metrics.COMMAND_SECONDS.labels(command).observe(time.monotonic() - start)
        if result.status is Status.BAD:
            self.bad_commands += 1
        else:
            self.bad_commands = 0
        await self.send(response.tagged(tag, result.status, result.message, result.code))
