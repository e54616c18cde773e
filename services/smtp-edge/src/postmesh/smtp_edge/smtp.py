"""The SMTP server protocol: aiosmtpd's connection, line reading and STARTTLS machinery, with
our own MAIL/RCPT/DATA/AUTH/EHLO (aiosmtpd's lack enhanced status codes, async authentication,
DSN, bare-newline checks, and AUTH on implicit TLS).

aiosmtpd's internals are reached only through :mod:`postmesh.smtp_edge.aiosmtpd_adapter`."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from postmesh.common import sasl
from postmesh.common.backend import BackendUnavailable, BoundVerifier
from postmesh.common.ids import new_queue_id
from postmesh.common.logging import bind_log_context, get_logger, kv, unbind_log_context
from postmesh.common.mailauth.authresults import strip_forged
from postmesh.common.mailauth.dmarc import all_from_addresses
from postmesh.common.mailauth.dnsclient import Resolver
from postmesh.common.mailauth.iprev import IprevResult, check_iprev
from postmesh.common.net import is_loopback
from postmesh.common.proxy_protocol import Address
from postmesh.smtp_edge import metrics
from postmesh.smtp_edge.aiosmtpd_adapter import AdaptedSMTP
from postmesh.smtp_edge.backend import AddressRefused, EdgeBackend, RecipientKind
from postmesh.smtp_edge.content_scan import RspamdScanner, ScanRequest, scan_message
from postmesh.smtp_edge.inbound_auth import InboundAuthenticator, InboundChecks, Verdict
from postmesh.smtp_edge.protocol import (
    BDAT_SYNTAX,
    BINARYMIME,
    DataReader,
    ProtocolError,
    bad_helo_argument,
    ehlo_keywords,
    line_ends_checked,
    parse_bdat,
    parse_mail,
    parse_rcpt,
    with_enhanced_code,
    with_header_section,
)
from postmesh.smtp_edge.queueing import (
    Envelope,
    EnvelopeRecipient,
    MessageQueuer,
    Queued,
    QueueFailed,
)
from postmesh.smtp_edge.received import ClientFacts, TlsFacts
from postmesh.smtp_edge.session import (
    MX,
    ListenerPolicy,
    SessionState,
    Transaction,
    recipient_verdict,
)
from postmesh.smtp_edge.session_answers import SessionAnswers
from postmesh.smtp_edge.settings import SmtpEdgeSettings
from postmesh.smtp_edge.throttle import MessageRate

log = get_logger(__name__)

DATA_CHUNK = 64 * 1024
# RFC 5321 §4.5.3.1.4: 512 octets per command line, raised by extensions: SIZE (RFC 1870),
# AUTH= (RFC 4954 §5), ENVID/RET/NOTIFY/ORCPT (RFC 3461 §5), SMTPUTF8, REQUIRETLS (11 octets,
# RFC 8689 §3). aiosmtpd's stream limit (1001 octets) bounds them all.
COMMAND_LIMITS = {"MAIL": 1000, "RCPT": 1000, "AUTH": 1000}
# RCPTs past the recipient limit that a transaction may send before its 452s count as errors
# (Postfix's smtpd_recipient_overshoot_limit default).
OVERSHOOT_LIMIT = 1000


class _ExchangeEnded(Exception):
    """A SASL exchange that cannot go on: its reply is sent, or the client has gone."""


class _NoHooks:
    """aiosmtpd wants a handler object; every command we care about is implemented here."""


def tls_facts(transport: Any) -> TlsFacts | None:
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        return None
    cipher = obj.cipher()
    return TlsFacts(
        version=obj.version() or "TLS",
        cipher=cipher[0] if cipher else "unknown",
        bits=cipher[2] if cipher else 0,
    )


class EdgeSMTP(AdaptedSMTP):
    def __init__(
        self,
        *,
        policy: ListenerPolicy,
        settings: SmtpEdgeSettings,
        backend: EdgeBackend,
        queuer: MessageQueuer,
        tls_context: ssl.SSLContext | None,
        sessions: set[EdgeSMTP],
        inflight: set[asyncio.Task[Queued]],
        loop: asyncio.AbstractEventLoop,
        resolver: Resolver,
        authenticator: InboundAuthenticator,
        message_rate: MessageRate | None = None,
        client: Address | None = None,
        scanner: RspamdScanner | None = None,
    ) -> None:
        super().__init__(
            handler=_NoHooks(),
            command_size_limits=COMMAND_LIMITS,
            data_size_limit=settings.smtp_max_message_bytes,
            # Arguments decode as UTF-8 (surrogateescape), replies are sent as UTF-8; whether
            # a non-ASCII address is allowed is decided per transaction (RFC 6531).
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            # RFC 5321 §4.3.1 greeting "220 domain ESMTP ..." (as Postfix), no version banner.
            ident="ESMTP Postmesh",
            tls_context=tls_context if policy.starttls else None,
            timeout=settings.smtp_idle_timeout_seconds,
            # We decide where AUTH is allowed (loopback or TLS, implicit TLS included).
            auth_require_tls=False,
            loop=loop,
        )
        self.policy = policy
        self.settings = settings
        self.backend = backend
        self.queuer = queuer
        self._sessions = sessions
        self._inflight = inflight
        self.state = SessionState(secrets.token_hex(6), policy, peer_ip="")
        # Auth's answers to this session's sender checks and remote domains (ADR 53).
        self._answers = SessionAnswers(settings.smtp_recipient_cache_seconds)
        # The client a PROXY protocol header named (the TCP peer is then the load balancer).
        self.proxied_client = client
        self._hung_up = False
        self.resolver = resolver
        # Reverse DNS of the client, looked up while the session goes on (Received, iprev).
        self._iprev: asyncio.Future[IprevResult] | None = None
        self.authenticator = authenticator
        # SPF (and DNS asked ahead) of the current transaction, from MAIL FROM (MX only).
        self._checks: InboundChecks | None = None
        self.message_rate = message_rate or MessageRate(0)
        self.scanner = scanner

    # --- connection lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        after_starttls = self.starttls_completed()
        super().connection_made(transport)
        if self.proxied_client is not None:
            # aiosmtpd makes a new session (peer from the socket) after STARTTLS too.
            self.set_peer(self.proxied_client)
        if after_starttls:
            self.state.reset_after_starttls(tls_facts(transport))
            self._count_tls()
            log.info(
                "tls established",
                extra=kv(session_id=self.state.session_id, tls=str(self.state.tls)),
            )
            return
        peer = self.peer
        self.state.peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._iprev = asyncio.ensure_future(check_iprev(self.resolver, self.state.peer_ip))
        if self.policy.implicit_tls:
            self.state.tls = tls_facts(transport)
            self._count_tls()
        self._sessions.add(self)
        metrics.SESSIONS.labels(self.policy.name).inc()
        metrics.ACTIVE.labels(self.policy.name).inc()

    def _count_tls(self) -> None:
        if self.state.tls is not None:
            metrics.TLS.labels(self.policy.name, self.state.tls.version).inc()

    def connection_lost(self, error: Exception | None) -> None:
        if self in self._sessions:
            metrics.ACTIVE.labels(self.policy.name).dec()
        self._sessions.discard(self)
        if self._iprev is not None and not self._iprev.done():
            self._iprev.cancel()
        super().connection_lost(error)

    async def run_session(self, command_loop: Callable[[], Awaitable[None]]) -> None:
        bind_log_context(session_id=self.state.session_id, listener=self.policy.name)
        log.info("connect", extra=kv(remote_ip=self.state.peer_ip, tls=self.state.tls is not None))
        if self._too_many_connections():
            # RFC 5321 §3.1: a 421 greeting instead of 220; the client tries again later.
            metrics.REJECTED.labels("too_many_connections").inc()
            log.warning("too many connections", extra=kv(remote_ip=self.state.peer_ip))
            self._last_words(
                f"421 4.7.0 {self.hostname} Error: too many connections from {self.state.peer_ip}"
            )
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await command_loop()
        finally:
            log.info(
                "disconnect",
                extra=kv(
                    remote_ip=self.state.peer_ip,
                    messages=self.state.messages,
                    errors=self.state.errors,
                    user=self.state.user,
                ),
            )

    def _too_many_connections(self) -> bool:
        limit, ip = self.settings.smtp_max_connections_per_ip, self.state.peer_ip
        if limit <= 0 or is_loopback(ip):
            return False
        return sum(1 for s in self._sessions if s.state.peer_ip == ip) > limit

    def on_idle_timeout(self) -> None:
        # RFC 5321 §4.5.3.2: tell the client why before closing (aiosmtpd just closes).
        log.info("idle timeout", extra=kv(session_id=self.state.session_id))
        self._last_words(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    @property
    def busy(self) -> bool:
        """Inside a mail transaction: a graceful shutdown lets it finish first."""
        return self.state.txn is not None or self.state.in_data

    def shutdown(self) -> None:
        """Hang up now with 421 (RFC 5321 §3.8); the client retries elsewhere."""
        self._last_words(f"421 4.3.2 {self.hostname} Service shutting down")
        if self.transport is not None:
            self.transport.close()

    def _last_words(self, reply: str) -> None:
        """Write a final reply outside the command loop, unless the connection is going."""
        if self._hung_up or self.transport is None or self.transport.is_closing():
            return
        self._hung_up = True
        try:
            self.write_now(reply.encode() + b"\r\n")
        except (OSError, RuntimeError, AttributeError):
            # A TLS transport mid-teardown can fail to take data; the client is gone anyway.
            log.debug("could not send final reply", extra=kv(session_id=self.state.session_id))

    # --- replies ------------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        if self._hung_up:
            return
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        text = with_enhanced_code(text)
        await self.push_raw(text)
        if text[:1] in ("4", "5") and not text.startswith("421"):
            self.state.errors += 1
            if self.state.errors >= self.settings.smtp_max_errors:
                log.warning("too many errors; hanging up", extra=kv(errors=self.state.errors))
                await self._hang_up(f"421 4.7.0 {self.hostname} Error: too many errors")

    async def _push_verbatim(self, line: str) -> None:
        if not self._hung_up:
            await self.push_raw(line)

    async def _hang_up(self, reply: str) -> None:
        if self._hung_up:
            return
        await self._push_verbatim(reply)
        self._hung_up = True
        if self.transport is not None:
            self.transport.close()

    async def _reject(self, reply: str, reason: str) -> None:
        metrics.REJECTED.labels(reason).inc()
        log.info("rejected", extra=kv(reply=reply, reason=reason))
        await self.push(reply)

    async def on_error(self, error: Exception) -> str:
        log.error("session error", exc_info=error)
        return "451 4.3.0 Internal error, please retry"

    def on_end_of_input(self) -> None:
        log.info("client closed its side", extra=kv(session_id=self.state.session_id))
        self._hung_up = True

    # --- greeting -----------------------------------------------------------------------------

    def _greeted(self, hostname: str, esmtp: bool) -> None:
        # RFC 5321 §4.1.4: HELO/EHLO resets any transaction.
        self.set_greeted(hostname, esmtp)
        self.state.helo = hostname
        self.state.esmtp = esmtp
        self._end_transaction()

    async def smtp_HELO(self, arg: str | None) -> None:
        if self._hung_up:
            return
        if arg is None or bad_helo_argument(arg):
            await self.push("501 5.5.4 Syntax: HELO hostname")
            return
        self._greeted(arg, esmtp=False)
        await self._push_verbatim(f"250 {self.hostname}")

    async def smtp_EHLO(self, arg: str | None) -> None:
        if self._hung_up:
            return
        if arg is None or bad_helo_argument(arg):
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._greeted(arg, esmtp=True)
        lines = [
            self.hostname,
            *ehlo_keywords(
                max_size=self.settings.smtp_max_message_bytes,
                starttls=self.tls_context is not None and self.state.tls is None,
                auth=self.state.auth_offered,
                mechanisms=tuple(sasl.offered(plaintext_ok=True)),  # under TLS, or loopback
                requiretls=self.state.requiretls_offered,
            ),
        ]
        for i, line in enumerate(lines):
            await self._push_verbatim(("250 " if i == len(lines) - 1 else "250-") + line)

    async def _require_helo(self) -> bool:
        if self.state.helo is None:
            await self.push("503 5.5.1 Error: send HELO/EHLO first")
            return False
        return True

    # --- STARTTLS -----------------------------------------------------------------------------

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self._hung_up:
            return
        if arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
        elif self.state.tls is not None:
            await self.push("554 5.5.1 Error: TLS already active")
        elif self.tls_context is None:
            await self.push("502 5.5.1 Error: command not implemented")
        else:
            self._end_transaction()  # RFC 3207 §4.2
            await super().smtp_STARTTLS(arg)

    # --- AUTH (RFC 4954) ----------------------------------------------------------------------

    async def smtp_AUTH(self, arg: str | None) -> None:
        if self._hung_up or not await self._require_helo():
            return
        st = self.state
        if not self.policy.auth_enabled or not st.esmtp:
            await self.push("503 5.5.1 Error: authentication not enabled")
            return
        if not st.auth_offered:
            await self._reject(
                "538 5.7.11 Encryption required for requested authentication mechanism",
                "encryption_required",
            )
            return
        if st.user is not None:
            await self.push("503 5.5.1 Error: already authenticated")
            return
        if st.txn is not None:
            # RFC 4954 §4: AUTH is not permitted during a mail transaction.
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        parts = (arg or "").split(" ")
        if not parts[0] or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mech = sasl.create(parts[0])
        if mech is None:
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        initial = parts[1] if len(parts) == 2 else None
        try:
            outcome = await sasl.run_exchange(
                mech, initial, self._sasl_challenge, BoundVerifier(self.backend, st.peer_ip)
            )
        except _ExchangeEnded:
            return  # the line was too long (answered) or the client went away
        except sasl.SaslCancelled:
            await self.push("501 5.7.0 Authentication aborted")  # RFC 4954 §4
            return
        except sasl.SaslError:
            await self.push("501 5.5.2 Cannot decode response")
            return
        except BackendUnavailable as e:
            metrics.AUTH.labels("temp_failure").inc()
            log.warning("auth backend failed", extra=kv(error=str(e), mechanism=mech.name))
            # RFC 4954 §6: the temporary failure reply of AUTH.
            await self.push("454 4.7.0 Temporary authentication failure")
            return
        user = outcome.user
        if user is None:
            st.auth_failures += 1
            metrics.AUTH.labels("failed").inc()
            log.info(
                "authentication failed",
                extra=kv(username=outcome.authcid, mechanism=mech.name, failures=st.auth_failures),
            )
            await asyncio.sleep(self.settings.smtp_auth_failure_delay_seconds)
            await self.push("535 5.7.8 Error: authentication failed")
            if st.auth_failures >= self.settings.smtp_max_auth_failures:
                await self._hang_up(
                    f"421 4.7.0 {self.hostname} Error: too many authentication failures"
                )
            return
        st.user = user
        bind_log_context(user=user)
        metrics.AUTH.labels("ok").inc()
        log.info("authenticated", extra=kv(user=user, mechanism=mech.name))
        await self.push("235 2.7.0 Authentication successful")

    async def _sasl_challenge(self, challenge: str) -> str:
        """RFC 4954 §4: "334 " and the base64 challenge; the client answers on one line."""
        await self._push_verbatim("334 " + challenge)
        try:
            line = await self.read_line()
        except ValueError:  # longer than the stream limit
            await self.push("500 5.5.6 Authentication exchange line is too long")
            raise _ExchangeEnded from None
        if not line.endswith(b"\n"):  # connection closed
            raise _ExchangeEnded
        self.restart_idle_timer()
        return line.rstrip(b"\r\n").decode("ascii", "replace")

    # --- the mail transaction -----------------------------------------------------------------

    async def _transaction_allowed(self) -> bool:
        if not await self._require_helo():
            return False
        if self.state.needs_auth:
            await self._reject("530 5.7.0 Authentication required", "auth_required")
            return False
        return True

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._hung_up or not await self._transaction_allowed():
            return
        if self.state.txn is not None:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        try:
            mail = parse_mail(
                arg, esmtp=self.state.esmtp, max_size=self.settings.smtp_max_message_bytes
            )
        except ProtocolError as e:
            await self._reject(e.reply, e.reason)
            return
        if mail.requiretls and not self.state.requiretls_offered:
            # RFC 8689 §3: REQUIRETLS only in a session that employs TLS (not advertised
            # before STARTTLS); 5.7.10 "Encryption needed" (RFC 5248 registry).
            await self._reject(
                "530 5.7.10 REQUIRETLS requires a TLS session (STARTTLS first)",
                "requiretls_without_tls",
            )
            return
        if mail.sender and not await self._may_send_as([mail.sender]):
            return
        sender_key = self.state.user or self.state.peer_ip
        if not is_loopback(self.state.peer_ip) and not self.message_rate.allow(sender_key):
            await self._reject(
                f"450 4.7.1 Error: too much mail from {sender_key}, try again later",
                "rate_limited",
            )
            return
        self.state.txn = Transaction(mail, new_queue_id())
        bind_log_context(queue_id=self.state.txn.queue_id)
        log.info(
            "mail from", extra=kv(mail_from=mail.sender, size=mail.size, requiretls=mail.requiretls)
        )
        if self._checks_sender():
            self._checks = self.authenticator.start(
                self.state.peer_ip, mail.sender, self.state.helo or ""
            )
        await self.push("250 2.1.0 Ok")

    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._hung_up or not await self._transaction_allowed():
            return
        txn = self.state.txn
        if txn is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        try:
            rcpt = parse_rcpt(arg, esmtp=self.state.esmtp, smtputf8=txn.mail.smtputf8)
        except ProtocolError as e:
            await self._reject(e.reply, e.reason)
            return
        if len(txn.recipients) >= self.settings.smtp_max_recipients:
            # RFC 5321 §4.5.3.1.10: 452, so the client sends the rest in another transaction.
            # Not an error that ends the session (the transaction would be lost with it), up
            # to Postfix's smtpd_recipient_overshoot_limit.
            txn.overshoot += 1
            reply = "452 4.5.3 Too many recipients"
            metrics.REJECTED.labels("too_many_recipients").inc()
            if txn.overshoot <= OVERSHOOT_LIMIT:
                await self._push_verbatim(with_enhanced_code(reply))
            else:
                await self.push(reply)
            return
        # RFC 5321 §4.5.1: <Postmaster> without a domain goes to auth as it is: auth knows this
        # system's postmaster (POSTMESH_AUTH_POSTMASTER); our hostname need not be a hosted
        # domain, so postmaster@hostname would have been refused as relaying.
        address = rcpt.address
        relaying = self.state.user is not None  # an authenticated session may relay
        try:
            if relaying and self._answers.remote(address):
                kind = RecipientKind.REMOTE  # auth said so for this domain moments ago
            else:
                kind = await self.backend.resolve_recipient(address)
        except BackendUnavailable as e:
            log.warning("recipient lookup failed", extra=kv(rcpt=address, error=str(e)))
            await self._reject(
                f"451 4.3.0 <{rcpt.address}>: Temporary lookup failure", "temp_failure"
            )
            return
        except AddressRefused as e:
            log.info("recipient address refused", extra=kv(rcpt=address, error=str(e)))
            await self._reject(
                f"553 5.1.3 <{rcpt.address}>: Recipient address rejected: invalid address",
                "bad_recipient_syntax",
            )
            return
        if relaying and kind is RecipientKind.REMOTE:
            self._answers.remember_remote(address)
        reply, reason = recipient_verdict(kind, rcpt.address, self.state.user is not None)
        if reason:
            await self._reject(reply, reason)
            return
        txn.add(EnvelopeRecipient(address, rcpt.notify, rcpt.orcpt))
        metrics.RECIPIENTS.labels(self.policy.name).inc()
        await self.push(reply)

    async def smtp_RSET(self, arg: str | None) -> None:
        if self._hung_up:
            return
        if arg:
            await self.push("501 5.5.4 Syntax: RSET")
            return
        self._end_transaction()
        await self.push("250 2.0.0 Ok")

    async def smtp_DATA(self, arg: str | None) -> None:
        if self._hung_up or not await self._transaction_allowed():
            return
        txn = self.state.txn
        if txn is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if txn.chunks is not None:
            # RFC 3030 §2: DATA and BDAT cannot be used in the same transaction.
            await self.push("503 5.5.1 Error: DATA after BDAT")
            return
        if txn.mail.body == BINARYMIME:
            # RFC 3030 §3: BINARYMIME content needs BDAT; DATA gets 503 "Bad sequence of
            # commands". The state is then indeterminate (the client must RSET): we end the
            # transaction, so nothing sent after it can complete it.
            self._end_transaction()
            await self.push("503 5.5.1 Error: BODY=BINARYMIME requires BDAT, not DATA")
            return
        if not txn.recipients:
            # RFC 2920 §3.1: with pipelining, DATA after only failed RCPTs must fail.
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        self.state.in_data = True
        try:
            content = await self._receive_data()
        finally:
            self.state.in_data = False
        if content is not None:
            await self._queue(txn, content)
        # RFC 5321 §4.1.1.4: the transaction ends with DATA, whatever the outcome.
        self._end_transaction()

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030 CHUNKING: the chunk's octets follow the command line whatever the answer,
        so they are read (or read and discarded) before any reply (§2)."""
        if self._hung_up:
            return
        try:
            cmd = parse_bdat(arg)
        except ProtocolError:
            # Without a valid size the chunk cannot be told apart from commands: reading its
            # octets as commands would let message content smuggle commands in, so hang up.
            await self._hang_up(BDAT_SYNTAX)
            return
        txn = self.state.txn
        refusal = ""
        if self.state.helo is None:
            refusal = "503 5.5.1 Error: send HELO/EHLO first"
        elif self.state.needs_auth:
            refusal = "530 5.7.0 Authentication required"
        elif txn is None:
            refusal = "503 5.5.1 Error: need MAIL command"
        elif not txn.recipients:
            refusal = "554 5.5.1 Error: no valid recipients"
        collect = None if refusal or txn is None else txn
        if collect is not None and collect.chunks is None:
            collect.chunks = bytearray()
        self.state.in_data = True
        try:
            complete = await self._receive_chunk(cmd.size, collect)
        finally:
            self.state.in_data = False
        if not complete:
            log.info("connection lost during BDAT")
            return
        if refusal or txn is None:
            # A refused chunk fails the transaction (RFC 3030 §2); chunks already pipelined
            # behind it meet "need MAIL command".
            self._end_transaction()
            await self.push(refusal)
            return
        if txn.too_big:
            # Said at the chunk that crossed the limit, so the client sends no more of it.
            self._end_transaction()
            await self._reject(
                "552 5.3.4 Message size exceeds fixed maximum message size", "too_big"
            )
            return
        if not cmd.last:
            await self.push(f"250 2.0.0 Ok: {cmd.size} octets received")
            return
        content = self._chunked_content(txn)
        if content is None:
            await self._reject("550 5.6.0 Bare LF/CR not allowed", "bare_newline")
        else:
            log.info("bdat complete", extra=kv(chunks=txn.chunk_count, size=len(content)))
            await self._queue(txn, content)
        self._end_transaction()  # the LAST chunk ends the transaction, as DATA does

    async def _receive_chunk(self, size: int, txn: Transaction | None) -> bool:
        """Read ``size`` octets, kept in ``txn.chunks`` while within the message size limit,
        else discarded. False when the connection closed first."""
        if txn is not None:
            txn.chunk_count += 1
        remaining = size
        while remaining:
            try:
                piece = await self.read_exactly(min(remaining, DATA_CHUNK))
            except asyncio.IncompleteReadError:
                return False
            remaining -= len(piece)
            self.restart_idle_timer()  # a slow but steady upload is not idle
            if txn is None or txn.chunks is None or txn.too_big:
                continue
            if len(txn.chunks) + len(piece) > self.settings.smtp_max_message_bytes:
                txn.too_big = True
                txn.chunks = None
            else:
                txn.chunks += piece
        return True

    def _chunked_content(self, txn: Transaction) -> bytes | None:
        """The message of a BDAT transaction, or None when bare newlines are refused. No
        dot-stuffing to undo (RFC 3030 §2); bare LF/CR are treated as in DATA, except in
        BINARYMIME content: binary octets are its point (RFC 3030 §3), and with no end marker
        in BDAT there is nothing for them to smuggle past (ADR 40)."""
        chunks: bytes | bytearray = txn.chunks or b""
        if txn.mail.body == BINARYMIME:
            return bytes(chunks)
        checked = line_ends_checked(chunks, self.settings.smtp_bare_newline == "normalize")
        return None if checked is None else bytes(checked)

    def _end_transaction(self) -> None:
        self.state.txn = None
        if self._checks is not None:
            self._checks.cancel()
            self._checks = None
        unbind_log_context("queue_id")

    def _checks_sender(self) -> bool:
        """Inbound authentication: on the MX, for clients that did not authenticate."""
        return (
            self.authenticator.policy.enabled and self.policy.name == MX and self.state.user is None
        )

    async def _receive_data(self) -> bytes | None:
        """The message, or None after a rejection reply (or a lost connection)."""
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(self.settings.smtp_max_message_bytes)
        while True:
            chunk = await self.read_some(DATA_CHUNK)
            if not chunk:
                log.info("connection lost during DATA")
                return None
            # A slow but steady upload is not idle.
            self.restart_idle_timer()
            leftover = reader.feed(chunk)
            if leftover is not None:
                break
        if leftover:
            # Pipelined commands after the end marker (RFC 2920) belong to the command reader.
            self.unread(leftover)
        if reader.too_big:
            await self._reject(
                "552 5.3.4 Message size exceeds fixed maximum message size", "too_big"
            )
            return None
        # A bare LF or CR could hide a second message behind an end marker that another MTA
        # on the path honours ("SMTP smuggling", CVE-2023-51766 and kin). As Postfix 3.9:
        # "normalize" stores bare-LF lines as CRLF lines (what Python's smtplib.sendmail of
        # msg.as_bytes() sends), "reject" refuses them. A bare CR is refused in both modes:
        # no client needs it and some MTAs treat it as a line end.
        content = reader.message(normalize_lf=self.settings.smtp_bare_newline == "normalize")
        if content is None:
            await self._reject("550 5.6.0 Bare LF/CR not allowed", "bare_newline")
        return content

    async def _queue(self, txn: Transaction, content: bytes) -> None:
        st = self.state
        self.stop_idle_timer()  # our checks and the bus are not client idleness
        # What the checks read and what is stored share one header section (RFC 5322 §2.1).
        content = with_header_section(content)
        # RFC 8601 §5: an Authentication-Results field claiming to be ours is a forgery.
        content, forged = strip_forged(content, self.hostname)
        if forged:
            log.info("removed forged authentication-results", extra=kv(count=forged))
        if self.state.user is not None and self.settings.smtp_sender_login_check:
            # Every address of every From field: a second field must not carry another's.
            authors = all_from_addresses(content)
            # The envelope sender was checked at MAIL in this transaction (the login cannot
            # change within one, RFC 4954 §4): no second look-up of the same address.
            authors = [a for a in authors if a != txn.mail.sender]
            if not await self._may_send_as(authors):
                self.restart_idle_timer()
                return
        iprev = await self._reverse_dns()
        verdict = await self._inbound_verdict(content, iprev)
        if verdict.reject:
            self.restart_idle_timer()
            reason = "dmarc_reject" if verdict.reject[0] == "5" else "temp_failure"
            await self._reject(verdict.reject, reason)
            return
        mailbox = verdict.mailbox
        if self.scanner is not None and (
            self.policy.name == MX or self.settings.smtp_rspamd_scan_submission
        ):
            outcome = await scan_message(
                self.scanner,
                ScanRequest(
                    txn.queue_id, st.peer_ip, st.helo or "", iprev.name, txn.mail.sender,
                    [r.address for r in txn.recipients], st.user or "",
                ),
                content,
                fail_open=self.settings.smtp_rspamd_fail_open,
            )  # fmt: skip
            if outcome.reply:
                self.restart_idle_timer()
                await self._reject(outcome.reply, "spam" if outcome.reply[0] == "5" else "scan")
                return
            content = outcome.content
            if outcome.spam and not mailbox:
                mailbox = self.settings.smtp_spam_mailbox
        envelope = Envelope(
            queue_id=txn.queue_id,
            mail_from=txn.mail.sender,
            recipients=list(txn.recipients),
            client=ClientFacts(
                helo=st.helo or "",
                remote_ip=st.peer_ip,
                listener=self.policy.name,
                esmtp=st.esmtp,
                tls=st.tls,
                authenticated_user=st.user or "",
                reverse_name=iprev.name,
            ),
            body_type=txn.mail.body,
            smtputf8=txn.mail.smtputf8,
            ret=txn.mail.ret,
            envid=txn.mail.envid,
            requiretls=txn.mail.requiretls,
            auth_header=verdict.header,
            mailbox=mailbox,
        )
        # Shielded: a client that disconnects now must not cancel a half-done publish; the
        # message is then queued (and logged) though the client may send it again.
        task = asyncio.ensure_future(self.queuer.enqueue(envelope, content))
        self._inflight.add(task)
        task.add_done_callback(_forget(self._inflight))
        try:
            queued = await asyncio.shield(task)
        except QueueFailed:
            # Never 250 for a message that is not durable (RFC 5321 §6.1).
            await self.push("451 4.3.0 Temporary failure, please retry")
            return
        finally:
            self.restart_idle_timer()
        st.messages += 1
        # The error limit is of errors without delivering mail (as Postfix's
        # smtpd_hard_error_limit): a client that gets a message through starts again.
        st.errors = 0
        await self.push(f"250 2.0.0 Ok: queued as {queued.queue_id}")

    async def _may_send_as(self, addresses: list[str]) -> bool:
        """Submission: the envelope sender and the From addresses must belong to the
        authenticated user or be one of their aliases (as Postfix's
        reject_sender_login_mismatch with smtpd_sender_login_maps). Replies when not."""
        user = self.state.user
        if user is None or not self.settings.smtp_sender_login_check:
            return True
        for address in addresses:
            if self._answers.owns(user, address):
                continue  # auth said so in this session moments ago (ADR 53)
            try:
                owners = await self.backend.address_owners(address)
            except BackendUnavailable as e:
                log.warning("sender lookup failed", extra=kv(sender=address, error=str(e)))
                await self._reject(
                    f"451 4.3.0 <{address}>: Temporary lookup failure", "temp_failure"
                )
                return False
            if user.lower() not in owners:
                await self._reject(
                    f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {user}",
                    "sender_mismatch",
                )
                return False
            self._answers.remember_owner(user, address)
        return True

    async def _inbound_verdict(self, content: bytes, iprev: IprevResult) -> Verdict:
        if self._checks is None:
            return Verdict(b"")
        try:
            return await self.authenticator.evaluate(
                content, self.state.peer_ip, iprev, self._checks
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # A check that breaks must not let the message through unchecked (a crafted
            # message could then pass a p=reject domain's DMARC): a temporary failure, as
            # Postfix's milter_default_action = tempfail; the sender retries, nothing is lost.
            log.exception("inbound authentication failed; message deferred")
            return Verdict(b"", reject="451 4.7.0 Temporary failure checking the message")

    async def _reverse_dns(self) -> IprevResult:
        if self._iprev is None:
            return IprevResult("permerror")
        try:
            # Its lookups have their own timeouts; shielded so a second caller can wait too.
            return await asyncio.shield(self._iprev)
        except Exception as e:  # a resolver bug must not lose the message
            log.warning("reverse dns failed", extra=kv(error=repr(e)))
            return IprevResult("temperror")

    # --- other commands -----------------------------------------------------------------------

    async def smtp_VRFY(self, arg: str | None) -> None:
        # RFC 5321 §3.5.3: 252 neither confirms nor denies (no address harvesting).
        if arg:
            await self.push("252 2.0.0 Cannot VRFY user, but will accept message")
        else:
            await self.push("501 5.5.4 Syntax: VRFY address")

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push("502 5.5.1 Error: EXPN is disabled")

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.push(
            "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT"
        )

    async def _http_request(self, arg: str | None) -> None:
        # A web client or proxy abuse, not an MTA (as Postfix's smtpd_forbidden_commands).
        metrics.REJECTED.labels("http_command").inc()
        await self._hang_up("221 2.7.0 Error: this is an SMTP server; goodbye")

    smtp_GET = smtp_POST = smtp_CONNECT = smtp_PUT = smtp_HEAD = _http_request


def _forget(inflight: set[asyncio.Task[Queued]]) -> Any:
    def done(task: asyncio.Task[Queued]) -> None:
        inflight.discard(task)
        if not task.cancelled():
            task.exception()  # already logged by the queuer; mark as retrieved

    return done
