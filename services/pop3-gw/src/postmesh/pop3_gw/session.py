"""One POP3 connection: the RFC 1939 §3 state machine AUTHORIZATION -> TRANSACTION -> UPDATE.

Parsing lives in :mod:`postmesh.pop3_gw.protocol`, storage behind
:class:`~postmesh.pop3_gw.backend.MailBackend`; this module decides what each command means in
the current state and answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl

from postmesh.common import sasl
from postmesh.common.backend import BackendUnavailable, BoundVerifier
from postmesh.common.idle import IdleDeadline
from postmesh.common.ids import new_queue_id
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.common.net import plaintext_auth_allowed
from postmesh.pop3_gw import metrics
from postmesh.pop3_gw import protocol as p
from postmesh.pop3_gw.backend import (
    DELETED,
    SEEN,
    MailBackend,
    MessageGone,
    MessageInfo,
)
from postmesh.pop3_gw.content import MessageEncoder
from postmesh.pop3_gw.lines import ConnectionClosed, LineReader, LineTooLong
from postmesh.pop3_gw.lock import MaildropLock
from postmesh.pop3_gw.maildrop import MessageDeleted, NoSuchMessage, SessionMaildrop
from postmesh.pop3_gw.settings import Pop3Settings
from postmesh.pop3_gw.window import ReadAheadWindow

log = get_logger(__name__)

# RFC 4954 §4 has SMTP servers accept SASL responses of 12288 octets; the same bound suits POP3.
_SASL_LINE_OCTETS = 12288
_CLOSE_TIMEOUT_SECONDS = 5.0

_TLS_REQUIRED = (
    "Plaintext authentication disallowed on non-secure connections: TLS required (use STLS)."
)

OK, ERR, TEMPFAIL = "ok", "err", "tempfail"

# Failure reasons that must stay vague: they never tell whether the user exists.
_GENERIC_FAILURES = frozenset({"bad credentials", "invalid credentials"})


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


class _Disconnect(Exception):
    """End the session now (the final response, if any, has been sent)."""


class _SaslLineTooLong(sasl.SaslError):
    def __init__(self, fatal: bool) -> None:
        super().__init__("response too long")
        self.fatal = fatal


_AUTHORIZATION_COMMANDS = (p.User, p.Pass, p.Auth, p.Capa, p.Stls, p.Quit, p.Utf8)
_TRANSACTION_COMMANDS = (
    p.Capa, p.Stat, p.List, p.Uidl, p.Retr, p.Top, p.Dele, p.Noop, p.Rset, p.Quit,
)  # fmt: skip


class Pop3Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        backend: MailBackend,
        settings: Pop3Settings,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool,
    ) -> None:
        self.id = new_queue_id()
        self.lines = LineReader(reader)
        # RFC 1939 §3 autologout: one timer per connection, not one per command (ADR 0052).
        self.idle = IdleDeadline(settings.pop3_idle_timeout_seconds)
        self.writer = writer
        self.backend = backend
        self.settings = settings
        self.tls_context = tls_context
        self.tls_active = implicit_tls
        self.listener = "pop3s" if implicit_tls else "pop3"
        peer = writer.get_extra_info("peername")
        self.peer_host: str = str(peer[0]) if peer else ""
        self.state = State.AUTHORIZATION
        self.pending_user: str | None = None
        self.user: str | None = None
        self.maildrop: SessionMaildrop | None = None
        self.lock: MaildropLock | None = None
        self.read_ahead: ReadAheadWindow | None = None
        self.bad_commands = 0
        self.auth_failures = 0
        self.utf8 = False
        # Set once the final response is sent: the loop ends and the connection closes.
        self.closing = False

    # -- I/O ------------------------------------------------------------------------------------
    async def _flush(self) -> None:
        transport = self.writer.transport
        high = transport.get_write_buffer_limits()[1]
        if not transport.is_closing() and transport.get_write_buffer_size() <= high:
            # Under the mark where the transport pauses the writer drain() would return at
            # once: no timer to set and cancel (RETR's hot path).
            return
        # A client that stops reading must not pin the session forever.
        try:
            async with asyncio.timeout(self.settings.pop3_idle_timeout_seconds):
                await self.writer.drain()
        except TimeoutError:
            log.info("client stopped reading, closing")
            raise _Disconnect from None

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self._flush()

    async def _readline(self, limit: int) -> bytes:
        try:
            return await self.idle.wait(self.lines.readline(limit))
        except TimeoutError:
            # RFC 1939 §3: an autologout timer expiring does not enter UPDATE: nothing deleted.
            log.info("idle timeout", extra=kv(state=self.state.value))
            await self._send(p.err("Disconnected for inactivity."))
            raise _Disconnect from None

    @property
    def plaintext_ok(self) -> bool:
        return plaintext_auth_allowed(self.peer_host, self.tls_active)

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        bind_log_context(session_id=self.id)
        metrics.SESSIONS_ACTIVE.inc()
        log.info(
            "session started",
            extra=kv(peer=self.peer_host, listener=self.listener, tls=self.tls_active),
        )
        try:
            await self._send(p.ok("Postmesh POP3 server ready."))
            await self._serve()
        except _Disconnect:
            pass
        except ConnectionClosed:
            log.info("client closed the connection", extra=kv(state=self.state.value))
        except (ConnectionError, ssl.SSLError, OSError) as e:
            log.info("connection lost", extra=kv(state=self.state.value, error=repr(e)))
        except asyncio.CancelledError:
            # Server shutdown: say why before closing, as Dovecot does; SYS/TEMP (RFC 3206)
            # tells the client to come back, and no UPDATE state means nothing is deleted.
            log.info("server shutdown", extra=kv(state=self.state.value))
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError, RuntimeError):
                self.writer.write(p.err("Server shutting down.", "SYS/TEMP"))
            raise
        finally:
            self.idle.close()
            metrics.SESSIONS_ACTIVE.dec()
            if self.state is State.TRANSACTION and self.maildrop and self.maildrop.deleted_count:
                # RFC 1939 §6: no QUIT, no UPDATE: marked messages stay in the maildrop.
                log.info(
                    "session ended without QUIT, deletions discarded",
                    extra=kv(marked=self.maildrop.deleted_count),
                )
            if self.read_ahead is not None:
                await self.read_ahead.close()
            await self._unlock()
            await self._close()
            log.info("session ended", extra=kv(state=self.state.value))

    async def _close(self) -> None:
        try:
            self.writer.close()
            async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass

    async def _serve(self) -> None:
        while not self.closing:
            try:
                line = await self._readline(self.settings.pop3_max_line_octets)
            except LineTooLong as e:
                metrics.count_command("unknown", ERR)
                if e.fatal:
                    log.info("unterminated line far over the limit, closing")
                    await self._send(p.err("Line too long, closing connection."))
                    return
                await self._bad("Line too long.")
                continue
            try:
                command = p.parse_command(line)
            except p.ParseError as e:
                metrics.count_command(e.keyword, ERR)
                await self._bad(e.text)
                continue
            keyword = p.keyword_of(command)
            result = await self._dispatch(command)
            metrics.count_command(keyword, result)

    async def _bad(self, text: str) -> str:
        """Answer an invalid command; too many of them end the session (as Dovecot)."""
        self.bad_commands += 1
        if self.bad_commands >= self.settings.pop3_max_bad_commands:
            log.info("too many invalid commands, closing", extra=kv(count=self.bad_commands))
            await self._send(p.err("Too many invalid commands, closing connection."))
            self.closing = True
            return ERR
        await self._send(p.err(text))
        return ERR

    async def _dispatch(self, command: p.Command) -> str:
        if self.state is State.AUTHORIZATION and not isinstance(command, _AUTHORIZATION_COMMANDS):
            return await self._bad("Not logged in.")
        if self.state is State.TRANSACTION and not isinstance(command, _TRANSACTION_COMMANDS):
            if isinstance(command, p.Stls):
                # RFC 2595 §4: STLS only in the AUTHORIZATION state.
                return await self._bad("STLS is only allowed before login.")
            if isinstance(command, p.Utf8):
                # RFC 6856 §2: UTF8 is valid in the AUTHORIZATION state only.
                return await self._bad("UTF8 is only allowed before login.")
            return await self._bad("Already logged in.")
        match command:
            case p.Capa():
                return await self._capa()
            case p.Stls():
                return await self._stls()
            case p.User(name):
                return await self._user(name)
            case p.Pass(password):
                return await self._pass(password)
            case p.Auth(mechanism, initial):
                return await self._auth(mechanism, initial)
            case p.Quit():
                return await self._quit()
            case p.Stat():
                return await self._stat()
            case p.List(msg):
                return await self._list(msg)
            case p.Uidl(msg):
                return await self._uidl(msg)
            case p.Retr(msg):
                return await self._retrieve(msg, None)
            case p.Top(msg, lines):
                return await self._retrieve(msg, lines)
            case p.Dele(msg):
                return await self._dele(msg)
            case p.Noop():
                await self._send(p.ok())
                return OK
            case p.Rset():
                return await self._rset()
            case p.Utf8():
                return await self._utf8()
        raise AssertionError(f"unhandled command {command!r}")

    # -- any state ------------------------------------------------------------------------------
    async def _capa(self) -> str:
        # RFC 2449 §5-6; RFC 5034 §5 (SASL), RFC 2595 §4 (STLS), RFC 3206 (AUTH-RESP-CODE).
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.plaintext_ok:
            caps.append("USER")
        # SCRAM sends no password, so it is offered without TLS too (RFC 5802 §9).
        caps.append("SASL " + " ".join(sasl.offered(self.plaintext_ok)))
        # RFC 6856 §2: "UTF8 USER": UTF-8 user names and passwords in USER/PASS too.
        caps.append("UTF8 USER")
        if self.state is State.AUTHORIZATION and not self.tls_active and self.tls_context:
            caps.append("STLS")
        caps.append("IMPLEMENTATION Postmesh")
        await self._send(p.multiline("Capability list follows", caps))
        return OK

    # -- AUTHORIZATION --------------------------------------------------------------------------
    async def _stls(self) -> str:
        if self.tls_active:
            return await self._bad("TLS is already active.")
        if self.tls_context is None:
            return await self._bad("STLS not available.")
        dropped = self.lines.discard_buffered()
        if dropped:
            # Commands pipelined behind STLS were sent in clear text: never run them.
            log.warning("discarded input sent after STLS", extra=kv(octets=dropped))
        self.writer.write(p.ok("Begin TLS negotiation now."))
        try:
            await self.writer.start_tls(
                self.tls_context,
                ssl_handshake_timeout=self.settings.pop3_tls_handshake_timeout_seconds,
            )
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as e:
            log.info("STLS handshake failed", extra=kv(error=repr(e)))
            raise _Disconnect from None
        self.tls_active = True
        # RFC 2595 §4: start again from a clean AUTHORIZATION state.
        self.pending_user = None
        log.info("TLS started", extra=kv(cipher=str(self.writer.get_extra_info("cipher"))))
        return OK

    async def _utf8(self) -> str:
        """RFC 6856 §2. Messages are sent as stored either way (no RFC 6857 downgrade): UTF-8
        header fields reach a client that did not ask, as with Dovecot."""
        self.utf8 = True
        await self._send(p.ok("UTF8 enabled."))
        return OK

    async def _user(self, name: str) -> str:
        if not self.plaintext_ok:
            await self._send(p.err(_TLS_REQUIRED, p.AUTH))
            return ERR
        self.pending_user = name
        await self._send(p.ok("Send your password."))
        return OK

    async def _pass(self, password: str) -> str:
        if not self.plaintext_ok:
            await self._send(p.err(_TLS_REQUIRED, p.AUTH))
            return ERR
        user, self.pending_user = self.pending_user, None
        if user is None:
            return await self._bad("No user name given (send USER first).")
        try:
            verdict = await self.backend.check_password(
                user, password, remote_ip=self.peer_host, mechanism=""
            )
        except BackendUnavailable:
            return await self._auth_unavailable("USER")
        return await self._authenticated(verdict.user, user, "USER", verdict.retry_after)

    async def _auth(self, mechanism: str | None, initial: str | None) -> str:
        offered = sasl.offered(self.plaintext_ok)
        if mechanism is None:
            await self._send(p.multiline("Supported mechanisms follow", offered))
            return OK
        mech = sasl.create(mechanism)
        if mech is None:
            return await self._bad("Unsupported authentication mechanism.")
        if mech.name not in offered:
            await self._send(p.err(_TLS_REQUIRED, p.AUTH))
            return ERR
        self.pending_user = None
        try:
            outcome = await sasl.run_exchange(
                mech, initial, self._sasl_challenge, BoundVerifier(self.backend, self.peer_host)
            )
        except _SaslLineTooLong as e:
            self.closing = e.fatal
            return await self._bad("Authentication response too long.")
        except sasl.SaslCancelled:
            # RFC 5034 §4: the client cancels with "*"; the server rejects the AUTH command.
            await self._send(p.err("Authentication cancelled."))
            return ERR
        except sasl.SaslError as e:
            return await self._bad(f"Invalid SASL {mech.name} response: {e}.")
        except BackendUnavailable:
            return await self._auth_unavailable(mech.name)
        return await self._authenticated(
            outcome.user, outcome.authcid, mech.name, outcome.retry_after, outcome.reason
        )

    async def _sasl_challenge(self, challenge: str) -> str:
        """RFC 5034 §4: "+ " and the base64 challenge; the client answers on one line."""
        await self._send(b"+ " + challenge.encode() + b"\r\n")
        try:
            line = await self._readline(_SASL_LINE_OCTETS)
        except LineTooLong as e:
            raise _SaslLineTooLong(e.fatal) from None
        return line.decode("ascii", errors="replace")

    async def _auth_unavailable(self, label: str) -> str:
        metrics.LOGINS.labels(label, TEMPFAIL).inc()
        await self._send(
            p.err("Authentication service temporarily unavailable, try later.", p.SYS_TEMP)
        )
        return TEMPFAIL

    async def _authenticated(
        self,
        user: str | None,
        username: str,
        label: str,
        retry_after: int = 0,
        reason: str = "bad credentials",
    ) -> str:
        """After the credentials were checked: lockout, failure, or the maildrop."""
        if retry_after:
            return await self._login_failed(
                username, label, reason="locked out", retry_after=retry_after
            )
        if user is None:
            return await self._login_failed(username, label, reason=reason or "bad credentials")
        # RFC 1939 §8: exclusive access to the maildrop, taken before its snapshot.
        lock = MaildropLock(
            self.backend, user, self.id, self.settings.pop3_maildrop_lock_seconds, self._lock_lost
        )
        try:
            # The lock and the listing under it in one store call (ADR 0057).
            locked, maildrop = await lock.acquire_and_open()
        except BackendUnavailable:
            metrics.LOGINS.labels(label, TEMPFAIL).inc()
            await self._send(p.err("Mailbox temporarily unavailable, try later.", p.SYS_TEMP))
            return TEMPFAIL
        if maildrop is None:
            # RFC 2449 §8.1.2 IN-USE; the session stays in AUTHORIZATION (RFC 1939 §7 PASS).
            metrics.LOGINS.labels(label, "in_use").inc()
            log.info("maildrop in use", extra=kv(user=user, holder=locked.holder))
            await self._send(p.err("Maildrop already locked.", p.IN_USE))
            return ERR
        metrics.LOGINS.labels(label, OK).inc()
        self.lock = lock
        self.user = user
        self.maildrop = SessionMaildrop(maildrop)
        s = self.settings
        if s.pop3_read_ahead_window_octets and s.pop3_read_ahead_max_octets:
            self.read_ahead = ReadAheadWindow(
                self.backend,
                user,
                maildrop.messages,
                self.maildrop.is_deleted,
                budget=s.pop3_read_ahead_window_octets,
                max_message=s.pop3_read_ahead_max_octets,
                max_batch=s.pop3_read_ahead_batch,
                idle_seconds=s.pop3_read_ahead_idle_seconds,
            )
        self.state = State.TRANSACTION
        bind_log_context(user=user)
        totals = self.maildrop.totals()
        log.info(
            "logged in",
            extra=kv(mechanism=label, messages=totals.count, octets=totals.octets),
        )
        await self._send(p.ok(f"Logged in, {totals.count} messages ({totals.octets} octets)."))
        return OK

    async def _login_failed(
        self, username: str, label: str, *, reason: str, retry_after: int = 0
    ) -> str:
        self.auth_failures += 1
        metrics.LOGINS.labels(label, "locked" if retry_after else "fail").inc()
        log.info(
            "login failed",
            extra=kv(username=p.printable(username, 128), mechanism=label, reason=reason),
        )
        # Slows password guessing (as Dovecot's auth_failure_delay).
        await asyncio.sleep(self.settings.pop3_auth_failure_delay_seconds)
        if retry_after:
            # RFC 2449 §8.1.1: refused because of a login delay (auth's shared lockout).
            text, code = (
                f"Too many failed logins; try again in {retry_after} seconds.",
                p.LOGIN_DELAY,
            )
        elif reason in _GENERIC_FAILURES:
            text, code = "Authentication failed.", p.AUTH
        else:
            # A protocol-level refusal (channel binding, authzid): saying why reveals nothing.
            text, code = f"Authentication failed: {reason}.", p.AUTH
        if self.auth_failures >= self.settings.pop3_max_auth_failures:
            await self._send(p.err(f"{text[:-1]}; too many failures, closing connection.", code))
            self.closing = True
            return ERR
        await self._send(p.err(text, code))
        return ERR

    async def _quit(self) -> str:
        if self.state is State.AUTHORIZATION:
            await self._send(p.ok("Logging out."))
            self.closing = True
            return OK
        self.state = State.UPDATE
        self.closing = True
        reply, result = await self._update()
        # RFC 1939 §6: the lock is released in UPDATE, before the reply, so a client that
        # reconnects right after +OK finds the maildrop free.
        await self._unlock()
        await self._send(reply)
        return result

    async def _unlock(self) -> None:
        if self.lock is not None:
            await self.lock.release()

    def _lock_lost(self) -> None:
        """Another session holds the maildrop now (ours expired): end this one without UPDATE,
        as POP3 has no way to tell the client (RFC 1939 §8 exclusive access)."""
        self.writer.transport.abort()

    # -- TRANSACTION ----------------------------------------------------------------------------
    def _drop(self) -> SessionMaildrop:
        assert self.maildrop is not None, "TRANSACTION state without a maildrop"
        return self.maildrop

    async def _message(self, number: int) -> MessageInfo | None:
        """The message, or None after answering -ERR for a missing or deleted one."""
        try:
            return self._drop().get(number)
        except NoSuchMessage:
            await self._send(p.err(f"There is no message {number}."))
        except MessageDeleted:
            await self._send(p.err(f"Message {number} is deleted."))
        return None

    async def _stat(self) -> str:
        totals = self._drop().totals()
        await self._send(p.ok(f"{totals.count} {totals.octets}"))
        return OK

    async def _list(self, msg: int | None) -> str:
        drop = self._drop()
        if msg is None:
            totals = drop.totals()
            await self._send(
                p.multiline(
                    f"{totals.count} messages ({totals.octets} octets)",
                    (f"{n} {info.size}" for n, info in drop.visible()),
                )
            )
            return OK
        info = await self._message(msg)
        if info is None:
            return ERR
        await self._send(p.ok(f"{msg} {info.size}"))
        return OK

    async def _uidl(self, msg: int | None) -> str:
        drop = self._drop()
        if msg is None:
            await self._send(
                p.multiline(
                    "Unique-ID listing follows",
                    (f"{n} {drop.unique_id(info)}" for n, info in drop.visible()),
                )
            )
            return OK
        info = await self._message(msg)
        if info is None:
            return ERR
        await self._send(p.ok(f"{msg} {drop.unique_id(info)}"))
        return OK

    async def _retrieve(self, msg: int, body_lines: int | None) -> str:
        """RETR (RFC 1939 §5) or TOP (§7): stream the message, never holding it whole."""
        info = await self._message(msg)
        if info is None:
            return ERR
        assert self.user is not None
        if body_lines is None and self.read_ahead is not None:
            pieces = await self.read_ahead.take(msg)
            if pieces is not None:
                # One write for status line and body: no per-chunk wake-ups.
                self.writer.writelines([p.ok(f"{info.size} octets"), *pieces])
                await self._flush()
                metrics.RETRIEVED_BYTES.inc(sum(map(len, pieces)))
                self._drop().mark_retrieved(msg)
                return OK
        assert self.user is not None
        chunks = self.backend.fetch(self.user, info.uid, info.size)
        try:
            # The first chunk comes before "+OK": a missing message or a failing store can
            # still be answered with -ERR instead of a truncated multi-line response.
            try:
                chunk: bytes | None = await anext(chunks, None)
            except MessageGone:
                await self._send(p.err(f"Message {msg} was expunged by another session."))
                return ERR
            except BackendUnavailable:
                await self._send(p.err("Message temporarily unavailable, try later.", p.SYS_TEMP))
                return TEMPFAIL
            encoder = MessageEncoder(body_lines)
            self.writer.write(
                p.ok(f"{info.size} octets") if body_lines is None else p.ok("Top of message")
            )
            sent = 0
            while chunk is not None:
                out = encoder.feed(chunk)
                if out:
                    self.writer.write(out)
                    sent += len(out)
                    await self._flush()
                if encoder.done:
                    break
                try:
                    chunk = await anext(chunks, None)
                except (MessageGone, BackendUnavailable) as e:
                    # Half a message is on the wire; the only honest end is to hang up (the
                    # client sees no terminator). Nothing is lost: no UPDATE without QUIT.
                    log.warning(
                        "message stream failed mid-response",
                        extra=kv(uid=info.uid, sent=sent, error=repr(e)),
                    )
                    raise _Disconnect from None
            tail = encoder.finish()
            self.writer.write(tail)
            await self._flush()
        finally:
            await chunks.aclose()
        metrics.RETRIEVED_BYTES.inc(sent + len(tail))
        if body_lines is None:
            self._drop().mark_retrieved(msg)
        return OK

    async def _dele(self, msg: int) -> str:
        info = await self._message(msg)
        if info is None:
            return ERR
        self._drop().mark_deleted(msg)
        if self.read_ahead is not None:
            self.read_ahead.discard(msg)
        await self._send(p.ok(f"Message {msg} deleted."))
        return OK

    async def _rset(self) -> str:
        drop = self._drop()
        drop.reset()
        totals = drop.totals()
        await self._send(p.ok(f"Maildrop has {totals.count} messages ({totals.octets} octets)."))
        return OK

    # -- UPDATE ---------------------------------------------------------------------------------
    async def _update(self) -> tuple[bytes, str]:
        """RFC 1939 §6: remove the marked messages; the reply to QUIT (-ERR if that failed)."""
        drop = self._drop()
        assert self.user is not None
        if self.lock is not None and self.lock.lost:
            return p.err("Maildrop lock lost; no messages deleted.", p.SYS_TEMP), TEMPFAIL
        if self.settings.pop3_retr_sets_seen:
            seen = drop.uids_to_mark_seen()
            if seen:
                try:
                    await self.backend.add_flags(self.user, seen, [SEEN])
                except BackendUnavailable:
                    log.warning("could not set \\Seen", extra=kv(uids=len(seen)))
        deleted = drop.deleted_uids()
        if not deleted:
            return p.ok("Logging out."), OK
        newly_flagged = drop.newly_deleted_uids()
        try:
            await self.backend.add_flags(self.user, deleted, [DELETED])
            # Only these UIDs: other \Deleted messages (an IMAP client's) are not ours to remove.
            expunged = await self.backend.expunge(self.user, deleted)
        except BackendUnavailable:
            await self._unflag(newly_flagged)
            log.warning("UPDATE failed, no message deleted", extra=kv(marked=len(deleted)))
            reply = p.err("Could not delete the marked messages; none were removed.", p.SYS_TEMP)
            return reply, TEMPFAIL
        log.info("messages deleted", extra=kv(marked=len(deleted), expunged=len(expunged)))
        return p.ok(f"Logging out, {len(expunged)} messages deleted."), OK

    async def _unflag(self, uids: list[int]) -> None:
        """Undo our \\Deleted flags so a later IMAP EXPUNGE does not remove them either."""
        if not uids:
            return
        assert self.user is not None
        try:
            await self.backend.remove_flags(self.user, uids, [DELETED])
        except BackendUnavailable:
            log.error("could not clear \\Deleted after a failed UPDATE", extra=kv(uids=uids))
