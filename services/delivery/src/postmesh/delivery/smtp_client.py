"""One outbound SMTP session (RFC 5321): aiosmtplib connects and does EHLO and opportunistic or
required STARTTLS (RFC 3207); the transactions then run on :mod:`postmesh.delivery.wire`, with
MAIL, RCPT and DATA sent as one group to a peer that offers PIPELINING (RFC 2920, ADR 53),
per-recipient replies, the RFC 3461 DSN parameters when the peer advertises DSN, and REQUIRETLS
(RFC 8689) only in a verified session. :mod:`postmesh.delivery.data` makes DATA's payload
(dot-stuffing, RFC 5321 §4.5.2, and CRLF line endings); BINARYMIME content goes by BDAT
(RFC 3030) to a peer that offers it, else converted or returned (ADR 40)."""

from __future__ import annotations

import _ssl
import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosmtplib

from postmesh.common.logging import get_logger, kv
from postmesh.delivery import bdat
from postmesh.delivery.binarymime import NotConvertible, to_seven_or_eight_bit
from postmesh.delivery.dane import DaneMismatch, DanePolicy
from postmesh.delivery.data import COMPLETED, START_INPUT, payload
from postmesh.delivery.wire import Wire, command_line

log = get_logger(__name__)

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: from the peer, or made here when no peer could answer."""

    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def status(self) -> str:
        """RFC 3463 status: the peer's enhanced code (RFC 2034) or one from the reply class."""
        m = _ENHANCED.match(self.text)
        if m and m.group(1) == str(self.code)[0]:
            return m.group(0)
        return {2: "2.0.0", 4: "4.0.0"}.get(self.code // 100, "5.0.0")

    @property
    def detail(self) -> str:
        """The text without its enhanced status code."""
        m = _ENHANCED.match(self.text)
        return self.text[m.end() :].strip() if m else self.text

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str
    envid: str = ""
    ret: str = ""
    eight_bit: bool = False
    # Declared BODY=BINARYMIME (RFC 3030 §3) when it reached us.
    binary: bool = False
    smtputf8: bool = False
    # RFC 8689: MAIL FROM gets REQUIRETLS; the relay sets it only for a session that meets
    # §4.2.1 (verified TLS, REQUIRETLS offered after STARTTLS).
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class Rcpt:
    address: str
    notify: tuple[str, ...] = ()
    orcpt: str = ""


# Called with the octets about to be sent (after any conversion) to make the final message:
# DKIM signing, so the signature covers what the peer gets. Raises to defer the message.
Finish = Callable[[bytes], Awaitable[bytes]]


class FinishFailed(Exception):
    """``finish`` could not make the message (signing keys unavailable): try again later."""


class _Stale(Exception):
    """A reused connection turned out closed (or closing) at MAIL: nothing of the transaction
    reached the peer."""


class SessionError(Exception):
    """The session could not be set up (connect, greeting, EHLO, TLS): try the next host."""

    def __init__(
        self,
        reply: Reply,
        tls_failure: bool = False,
        insecure: bool = False,
        remote_mta: str = "",
    ) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls_failure = tls_failure
        # The peer answered but cannot give verified TLS: no STARTTLS, or a certificate that
        # does not verify for the MX name. Trying again later will not change that.
        self.insecure = insecure
        # The MX host whose own reply ``reply`` is (a 421 or 554 greeting, a refused EHLO):
        # a report names it in Remote-MTA as for any reply (RFC 3464 §2.3.5). Empty when
        # the reply was made here (no connection, a TLS failure).
        self.remote_mta = remote_mta


def xtext(value: str) -> str:
    """RFC 3461 §4: xtext, "+" and "=" and anything outside "!".."~" as +HH."""
    out = []
    for b in value.encode("utf-8"):
        ch = chr(b)
        out.append(ch if 33 <= b <= 126 and ch not in "+=" else f"+{b:02X}")
    return "".join(out)


def is_eight_bit(content: bytes) -> bool:
    return not content.isascii()


def needs_smtputf8(envelope: Envelope, rcpts: Sequence[Rcpt], content: bytes) -> bool:
    """Whether SMTPUTF8 is really needed: a non-ASCII address or header (RFC 6531 §3.2; as
    Postfix's smtputf8_autodetect, an all-ASCII message goes without it)."""
    if not envelope.mail_from.isascii() or not all(r.address.isascii() for r in rcpts):
        return True
    end = content.find(b"\r\n\r\n")
    return not (content if end < 0 else content[:end]).isascii()


def unverified_context() -> ssl.SSLContext:
    """Opportunistic STARTTLS: encryption against passive reading, no authentication (RFC 7435
    opportunistic security; most MX certificates would not verify)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def verified_context(ca_file: str | None) -> ssl.SSLContext:
    """MTA-STS enforce (RFC 8461 §4.2) and REQUIRETLS (RFC 8689 §4.2.1 step 4): a trusted chain
    and the MX name in the certificate (RFC 6125 DNS-ID)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def peer_chain(transport: asyncio.BaseTransport) -> list[bytes]:
    """The certificates the peer sent (DER, its own first), unverified: what DANE-TA(2)
    matches an issuer in (RFC 7671 §5.2.2). Python 3.13 has this as a public method; before
    it, the ssl module's C object has had it since 3.10. Without either, the leaf alone (enough
    for DANE-EE(3), the usage nearly every MX publishes)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return []
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:
        return [bytes(c) for c in public() or []]
    inner = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if inner is not None:
        return [c.public_bytes(_ssl.ENCODING_DER) for c in inner() or []]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


class SmtpSession:
    """One connection to one address of one MX host; several transactions may use it."""

    def __init__(
        self,
        mx_name: str,
        address: str,
        port: int,
        helo_name: str,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        self.mx_name = mx_name
        self.address = address
        self.port = port
        self.helo_name = helo_name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        # aiosmtplib's client up to EHLO (and STARTTLS); its EHLO answer stays the record of
        # the peer's extensions. Every command after that goes through ``wire``.
        self.smtp: aiosmtplib.SMTP | None = None
        self.wire: Wire | None = None
        self.tls = False
        # TLS with a certificate verified for mx_name (open() was given a verifying context).
        self.verified = False
        self.transactions = 0
        self._verify: ssl.SSLContext | None = None
        # How DANE authenticated the peer (for the log); empty without DANE.
        self.authenticated_by = ""

    @property
    def remote_mta(self) -> str:
        return self.mx_name

    @property
    def connected(self) -> bool:
        return self.wire is not None and self.wire.connected

    def supports(self, extension: str) -> bool:
        return self.smtp is not None and self.smtp.supports_extension(extension)

    @property
    def requiretls_ready(self) -> bool:
        """RFC 8689 §4.2.1 steps 4-5: verified TLS, and REQUIRETLS in the EHLO after it."""
        return self.verified and self.supports("requiretls")

    async def open(
        self, verify: ssl.SSLContext | None = None, dane: DanePolicy | None = None
    ) -> None:
        """Connect, EHLO and STARTTLS. ``verify`` set (MTA-STS enforce): TLS with a valid
        certificate for mx_name is required. ``dane`` set (RFC 7672 §2.2): TLS is required and
        the certificate chain must match the host's TLSA records (none usable: TLS without
        authentication). Neither: STARTTLS when offered, unverified, and a failed handshake
        falls back to a new plaintext session (as Postfix's "may" level)."""
        self._verify = verify
        try:
            await self._open(starttls=True, verify=verify, dane=dane)
        except SessionError as e:
            if verify is not None or dane is not None or not e.tls_failure:
                raise
            log.info(
                "STARTTLS failed; retrying without TLS",
                extra=kv(mx=self.mx_name, address=self.address, error=str(e)),
            )
            await self.close()
            await self._open(starttls=False, verify=None, dane=None)
        assert self.smtp is not None and self.smtp.transport is not None
        # EHLO's reply was the last one read: the wire takes every reply from here on.
        self.wire = Wire.take_over(self.smtp.transport, self.command_timeout)

    async def _open(
        self, starttls: bool, verify: ssl.SSLContext | None, dane: DanePolicy | None
    ) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=self.address,
            port=self.port,
            local_hostname=self.helo_name,
            timeout=self.command_timeout,
            start_tls=False,
            use_tls=False,
            validate_certs=False,
        )
        self.smtp = smtp
        self.wire = None
        self.tls = self.verified = False
        try:
            await smtp.connect(timeout=self.connect_timeout)
            await self._ehlo()
        except aiosmtplib.SMTPResponseException as e:
            # The peer's own reply to the connection (its greeting) or to EHLO/HELO.
            raise SessionError(Reply(e.code, e.message), remote_mta=self.mx_name) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise SessionError(
                Reply(451, f"4.4.1 connection to {self._where()} failed: {e}")
            ) from None
        if not starttls or not smtp.supports_extension("starttls"):
            if verify is not None or dane is not None:
                reply = Reply(451, f"4.7.5 {self._where()} does not offer STARTTLS")
                await self.close()
                raise SessionError(reply, tls_failure=True, insecure=True)
            return
        try:
            await smtp.starttls(
                server_hostname=self.mx_name,
                validate_certs=verify is not None,
                tls_context=verify or unverified_context(),
            )
            self.tls = True
            self.verified = verify is not None
            if dane is not None and dane.authenticates:
                self._authenticate(dane)
            await self._ehlo()  # RFC 3207 §4.2: forget what was learnt before TLS
        except DaneMismatch as e:
            # RFC 7672 §2.2: no mail over a session that fails DANE authentication.
            await self.close()
            raise SessionError(Reply(451, f"4.7.5 {e}"), insecure=True) from None
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as e:
            reply = Reply(451, f"4.7.5 TLS with {self._where()} failed: {e}")
            bad_cert = isinstance(e, ssl.SSLCertVerificationError) or isinstance(
                e.__cause__, ssl.SSLCertVerificationError
            )
            raise SessionError(reply, tls_failure=True, insecure=bad_cert) from None

    def _authenticate(self, dane: DanePolicy) -> None:
        """The peer's chain against the host's TLSA records (DaneMismatch if it fails)."""
        assert self.smtp is not None and self.smtp.transport is not None
        self.authenticated_by = dane.check(peer_chain(self.smtp.transport))
        self.verified = True
        log.info(
            "DANE authenticated",
            extra=kv(mx=self.mx_name, address=self.address, match=self.authenticated_by),
        )

    async def _ehlo(self) -> None:
        assert self.smtp is not None
        try:
            await self.smtp.ehlo()
        except aiosmtplib.SMTPHeloError as e:
            if e.code >= 500 and e.code != 554:
                await self.smtp.helo()  # RFC 5321 §4.1.1.1: an old server may know only HELO
            else:
                raise

    def _where(self) -> str:
        return f"{self.mx_name}[{self.address}]:{self.port}"

    async def reset(self) -> bool:
        """RSET after a transaction that ended early (a refused MAIL, no RCPT accepted, a
        refused DATA or chunk); False if the connection is dead."""
        if self.wire is None or not self.connected:
            return False
        try:
            await self.wire.command(b"RSET")
            return True
        except (aiosmtplib.SMTPException, OSError):
            await self.close()
            return False

    @property
    def binarymime(self) -> bool:
        """RFC 3030 §3: BINARYMIME is usable only with CHUNKING (BDAT) as well."""
        return self.supports("binarymime") and self.supports("chunking")

    async def send(
        self,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None = None,
    ) -> dict[str, Reply]:
        """One transaction; every recipient gets a reply. Raises aiosmtplib / OS errors when
        the connection breaks (the caller defers whoever has no final answer yet),
        FinishFailed when ``finish`` fails (nothing was sent), and SessionError when a reused
        connection was found closed and a new one could not be opened (nothing was sent).

        A reused connection gets no RSET first: every transaction here ends in the initial
        state (RFC 5321 §4.1.1.4 after the final reply to DATA; an early end sends RSET), so
        RSET would only probe that the peer is still there, a round trip per message. A peer
        that closed the idle connection is seen at MAIL instead (no reply, or 421, RFC 5321
        §3.8), before anything of the message was sent; the transaction then runs on a new
        connection."""
        reused = self.transactions > 0
        try:
            return await self._send(envelope, rcpts, content, finish, reused)
        except _Stale:
            log.info("idle connection closed by the peer; reconnecting", extra=kv(mx=self._where()))
            await self.close()
            await self.open(self._verify)
            self.transactions = 0
            if envelope.requiretls and not self.requiretls_ready:
                # Not the session the relay checked: let it try the next host, or later.
                text = f"4.7.5 {self._where()} no longer meets REQUIRETLS after reconnecting"
                raise SessionError(Reply(451, text), tls_failure=True, insecure=True) from None
            return await self._send(envelope, rcpts, content, finish, reused=False)

    async def _send(
        self,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None,
        reused: bool,
    ) -> dict[str, Reply]:
        assert self.smtp is not None
        smtp = self.smtp
        self.transactions += 1
        smtputf8 = envelope.smtputf8 and needs_smtputf8(envelope, rcpts, content)
        if smtputf8 and not smtp.supports_extension("smtputf8"):
            # RFC 6531 §3.2: an internationalised message must not go to a server without
            # SMTPUTF8; no downgrade (RFC 6857 is experimental), so it is returned.
            text = f"5.6.7 {self.mx_name} does not support SMTPUTF8 (RFC 6531)"
            return {r.address: Reply(553, text) for r in rcpts}
        binary = envelope.binary and self.binarymime
        if envelope.binary and not binary:
            # RFC 3030 §3: no binary data to a peer without BINARYMIME; convert the binary
            # parts (base64) when that changes nothing a signature covers, else return it.
            try:
                content = to_seven_or_eight_bit(content)
            except NotConvertible as e:
                text = (
                    f"5.6.3 {self.mx_name} does not support BINARYMIME and the message "
                    f"cannot be converted: {e}"
                )
                return {r.address: Reply(554, text) for r in rcpts}
        if finish is not None:
            try:
                content = await finish(content)  # DKIM signs exactly what is sent
            except Exception as e:
                raise FinishFailed(str(e)) from e
        # What the content is, not what the client declared: a 7-bit body declared 8BITMIME
        # goes to any server (RFC 6152 §3).
        eight_bit = not binary and is_eight_bit(content)
        if eight_bit and not smtp.supports_extension("8bitmime"):
            # RFC 6152 §3: convert to 7 bit or return it. Converting after DKIM signing would
            # break the signature, so it is returned (5.6.3, RFC 3463 "conversion required").
            text = f"5.6.3 {self.mx_name} does not support 8BITMIME and the message is 8-bit"
            return {r.address: Reply(554, text) for r in rcpts}
        limit = self.size_limit
        if limit and len(content) > limit:
            # RFC 1870 §6: the server said up front it takes nothing this large.
            text = f"5.3.4 message size {len(content)} exceeds {self.mx_name}'s limit {limit}"
            return {r.address: Reply(552, text) for r in rcpts}
        if envelope.requiretls and not self.requiretls_ready:
            # The relay checks this before sending; a session that does not meet RFC 8689
            # §4.2.1 must never carry the message.
            text = f"5.7.30 REQUIRETLS support required: {self.mx_name} does not meet it"
            return {r.address: Reply(550, text) for r in rcpts}
        dsn = smtp.supports_extension("dsn")
        opts: list[bytes] = []
        if binary:
            opts.append(b"BODY=BINARYMIME")
        elif eight_bit:
            opts.append(b"BODY=8BITMIME")
        if smtputf8:
            opts.append(b"SMTPUTF8")
        if smtp.supports_extension("size"):
            opts.append(b"SIZE=%d" % len(content))
        if dsn and envelope.ret:
            opts.append(b"RET=" + envelope.ret.encode())
        if dsn and envelope.envid:
            opts.append(b"ENVID=" + xtext(envelope.envid).encode())
        if envelope.requiretls:
            opts.append(b"REQUIRETLS")
        try:
            mail = command_line(b"MAIL", b"FROM:<" + envelope.mail_from.encode() + b">", *opts)
        except ValueError:  # a control character would end the command early (injection)
            return {r.address: Reply(553, "5.1.7 invalid sender address") for r in rcpts}
        replies: dict[str, Reply] = {}
        lines: list[tuple[str, bytes]] = []
        for r in rcpts:
            ropts: list[bytes] = []
            if dsn and r.notify:
                ropts.append(b"NOTIFY=" + ",".join(r.notify).encode())
            if dsn and r.orcpt:
                ropts.append(b"ORCPT=" + r.orcpt.encode())
            try:
                lines.append(
                    (r.address, command_line(b"RCPT", b"TO:<" + r.address.encode() + b">", *ropts))
                )
            except ValueError:
                replies[r.address] = Reply(553, "5.1.3 invalid recipient address")
        if not lines:
            return replies  # nothing worth a MAIL
        assert self.wire is not None
        wire = self.wire
        # RFC 2920 §3.1: MAIL, the RCPTs and DATA go as one group (DATA last); BDAT's chunks
        # follow one at a time, each reply read (bdat.py).
        with_data = not binary
        pipelined = smtp.supports_extension("pipelining")
        try:
            if pipelined:
                rest = b"".join(line for _, line in lines) + (b"DATA\r\n" if with_data else b"")
                wire.write(mail + rest)
            else:
                wire.write(mail)
            resp = await wire.reply()
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            if reused:
                raise _Stale from None
            raise
        if reused and resp.code == 421:
            raise _Stale
        reply = Reply(resp.code, resp.message)
        if not reply.ok:
            if pipelined:
                await self._skip(len(lines), with_data)
            await self.reset()
            return {r.address: reply for r in rcpts}
        for address, line in lines:
            if not pipelined:
                wire.write(line)
            resp = await wire.reply()
            replies[address] = Reply(resp.code, resp.message)
        accepted = [a for a, _ in lines if replies[a].ok]
        start = None
        if with_data and (pipelined or accepted):
            start = await wire.reply() if pipelined else await wire.command(b"DATA")
        if not accepted:
            if start is not None and start.code == START_INPUT:
                await self._end_empty_data()
            await self.reset()
            return replies
        if binary:
            final = await self._bdat(content)
        else:
            assert start is not None
            if start.code != START_INPUT:
                final = Reply(start.code, start.message)
                await self.reset()
            else:
                wire.write(payload(content))
                resp = await wire.reply()
                final = Reply(resp.code, resp.message)
                if resp.code != COMPLETED:
                    await self.reset()
        for a in accepted:
            replies[a] = final
        return replies

    async def _skip(self, rcpts: int, with_data: bool) -> None:
        """After a refused MAIL in a pipelined group: read the RCPT replies (and DATA's) that
        follow, so the next command's reply is its own; a connection that breaks meanwhile is
        closed (the refusal stands)."""
        assert self.wire is not None
        try:
            for _ in range(rcpts):
                await self.wire.reply()
            if with_data and (await self.wire.reply()).code == START_INPUT:
                await self._end_empty_data()
        except (aiosmtplib.SMTPException, OSError):
            await self.close()

    async def _end_empty_data(self) -> None:
        """RFC 2920 §3.1: the server took a pipelined DATA though no recipient was accepted;
        the client ends it with the end-of-data line alone, and the server refuses it."""
        assert self.wire is not None
        self.wire.write(b".\r\n")
        await self.wire.reply()

    async def _bdat(self, content: bytes) -> Reply:
        """The message as BDAT chunks, each reply checked: a chunk refused ends the transaction
        (RFC 3030 §2: no more chunks after a 4xx/5xx), and its reply is the answer."""
        assert self.wire is not None
        for chunk, last in bdat.chunks(content, bdat.CHUNK_SIZE):
            resp = await bdat.send_chunk(self.wire, chunk, last)
            reply = Reply(resp.code, resp.message)
            if not reply.ok:
                await self.reset()
                return reply
        return reply

    @property
    def size_limit(self) -> int:
        """The peer's SIZE (RFC 1870); 0 when it gave none."""
        if self.smtp is None:
            return 0
        value = self.smtp.esmtp_extensions.get("size", "")
        return int(value) if value.strip().isdigit() else 0

    @property
    def peer_has_dsn(self) -> bool:
        return self.supports("dsn")

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        wire, self.wire = self.wire, None
        if wire is not None:
            if wire.connected:
                wire.timeout = 5
                try:
                    await wire.command(b"QUIT")
                except (aiosmtplib.SMTPException, OSError):
                    pass
            wire.close()
            return
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
