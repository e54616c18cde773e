"""Remote delivery of one message to the recipients of one domain: next hop (routing), MX hosts
(mx), MTA-STS policy (mta_sts), the message's own TLS demand (requiretls, RFC 8689), then SMTP
sessions (smtp_client) in preference order, reusing an idle connection to the same host and
holding at most N connections per destination."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib
import dns.asyncresolver

from postmesh.common.logging import get_logger, kv
from postmesh.delivery.dane import DanePolicy, TlsaLookupFailed
from postmesh.delivery.dane import lookup as dane_lookup
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.mta_sts import MtaSts, Policy
from postmesh.delivery.mx import DnsError, HostAddresses, MxHost, NullMx, resolve_host, resolve_mx
from postmesh.delivery.requiretls import TlsPolicy, no_secure_session, not_offered, tls_policy
from postmesh.delivery.routing import NextHop, Router
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import (
    Envelope,
    Finish,
    FinishFailed,
    Rcpt,
    Reply,
    SessionError,
    SmtpSession,
    verified_context,
)

log = get_logger(__name__)

# mx name, address, port, what TLS must be ("": opportunistic; "pkix " and/or DanePolicy.key)
_Key = tuple[str, str, int, str]


class ConnectionCache:
    """Idle sessions kept ``idle_seconds`` for the next message to the same host (as Postfix's
    connection cache, smtp_connection_cache_time_limit)."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._idle: dict[_Key, list[tuple[SmtpSession, float]]] = {}

    def take(self, key: _Key) -> SmtpSession | None:
        now = time.monotonic()
        stack = self._idle.get(key, [])
        while stack:
            session, since = stack.pop()
            if now - since <= self.idle_seconds and session.connected:
                return session
            asyncio.get_running_loop().create_task(session.close())
        return None

    async def give(self, key: _Key, session: SmtpSession) -> None:
        if self.idle_seconds <= 0 or not session.connected:
            await session.close()
            return
        self._idle.setdefault(key, []).append((session, time.monotonic()))

    async def sweep(self) -> None:
        """Close sessions idle for too long (called periodically)."""
        now = time.monotonic()
        for key, stack in list(self._idle.items()):
            keep = [(s, t) for s, t in stack if now - t <= self.idle_seconds]
            for s, t in stack:
                if now - t > self.idle_seconds:
                    await s.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    async def close_all(self) -> None:
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for s, _ in stack:
                await s.close()


def _result(address: str, reply: Reply, remote_mta: str) -> RecipientResult:
    if reply.ok:
        outcome = Outcome.RELAYED
    elif reply.transient:
        outcome = Outcome.DEFERRED
    else:
        outcome = Outcome.BOUNCED
    return RecipientResult(
        address, outcome, str(reply.code), reply.status, reply.detail, remote_mta,
        str(reply) if remote_mta else "",
    )  # fmt: skip


@dataclass
class _NoHost:
    """Why no host took the transaction: ``last`` ordinary failure (connection, DNS, greeting,
    MTA-STS), and the RFC 8689 refusals of hosts that were reached but do not qualify."""

    last: Reply
    refusals: list[Reply] = field(default_factory=list)
    # Some host failed for an ordinary reason (it may qualify once it can be reached).
    ordinary: bool = False
    # The MX host that gave ``last`` when it is that host's own reply (its greeting or EHLO);
    # empty when ``last`` was made here.
    last_mta: str = ""

    def fail(self, reply: Reply, remote_mta: str = "") -> None:
        self.last, self.last_mta, self.ordinary = reply, remote_mta, True

    def skip(self, reply: Reply) -> None:
        """A host not tried at all (MTA-STS): ``reply`` says why, and no host said anything."""
        self.last, self.last_mta = reply, ""

    def refuse(self, reply: Reply) -> None:
        self.refusals.append(reply)

    def deferral(self) -> Reply:
        last = self.last
        return last if last.transient else Reply(451, f"4.4.1 {last}")

    def deferred(self, rcpts: Sequence[Rcpt]) -> list[RecipientResult]:
        """Every recipient deferred for ``last``; a reply a host gave itself keeps its
        host and its text for Remote-MTA and Diagnostic-Code (RFC 3464 §2.3.5, §2.3.6), as
        any other reply does, also when its 5xx is deferred here (Postfix's
        smtp_skip_5xx_greeting)."""
        reply = self.deferral()
        remote = str(self.last) if self.last_mta else ""
        return [
            RecipientResult(
                r.address, Outcome.DEFERRED, str(reply.code), reply.status, reply.detail,
                self.last_mta, remote,
            )
            for r in rcpts
        ]  # fmt: skip

    def refusal(self) -> Reply:
        """5.7.30 when some host gave verified TLS but lacked REQUIRETLS, else 5.7.10."""
        return next((r for r in self.refusals if r.status == "5.7.30"), self.refusals[-1])


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _session_failed(
    failed: _NoHost, e: SessionError, mx: str, address: str, requiretls: bool
) -> None:
    """Note a session that could not be had with one MX address (the next one is tried)."""
    log.info("MX session failed", extra=kv(mx=mx, address=address, reply=str(e.reply)))
    if requiretls and e.insecure:
        failed.refuse(no_secure_session(e.reply.detail))
    else:
        failed.fail(e.reply, e.remote_mta)


class Relay:
    def __init__(
        self,
        settings: DeliverySettings,
        resolver: dns.asyncresolver.Resolver,
        mta_sts: MtaSts | None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.mta_sts = mta_sts
        self.router = Router(settings.relayhost, settings.transport_map, settings.smtp_port)
        self.cache = ConnectionCache(settings.relay_connection_idle_seconds)
        # Per next hop: the semaphore and how many deliveries hold or wait for it (dropped at
        # zero, so the table does not grow with every domain ever seen).
        self._limits: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        ca = str(settings.relay_ca_file) if settings.relay_ca_file else None
        self._verify = verified_context(ca)

    async def deliver(
        self,
        domain: str,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None = None,
    ) -> list[RecipientResult]:
        """A result for every recipient: RELAYED, BOUNCED or DEFERRED. ``finish`` (DKIM
        signing) is applied in the session, to the octets the chosen host gets (ADR 40)."""
        hop = self.router.nexthop(domain)
        limit, users = self._limits.setdefault(
            hop.key, (asyncio.Semaphore(self.settings.destination_concurrency), [0])
        )
        users[0] += 1
        try:
            async with limit:
                started = time.monotonic()
                results = await self._deliver(hop, domain, envelope, rcpts, content, finish)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._limits[hop.key]
        log.info(
            "relay attempt",
            extra=kv(
                domain=domain, nexthop=hop.key, seconds=round(time.monotonic() - started, 3),
                outcomes=[r.outcome.value for r in results],
            ),
        )  # fmt: skip
        return results

    def _all(self, rcpts: Sequence[Rcpt], reply: Reply, remote: str = "") -> list[RecipientResult]:
        return [_result(r.address, reply, remote) for r in rcpts]

    async def _hosts(self, hop: NextHop) -> list[MxHost]:
        if not hop.mx_lookup:
            # An address literal is the domain itself (a missing host is the recipient's
            # problem); an operator's [host] route that does not resolve is a deferral.
            return [MxHost(hop.host, 0, implicit=hop.direct_to_domain)]
        return await resolve_mx(self.resolver, hop.host)

    async def _deliver(
        self,
        hop: NextHop,
        domain: str,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None,
    ) -> list[RecipientResult]:
        try:
            hosts = await self._hosts(hop)
        except NullMx:
            # RFC 7505 §4.2: reply 556 with enhanced status 5.1.10.
            return self._all(rcpts, Reply(556, f"5.1.10 domain {domain} accepts no mail (null MX)"))
        except DnsError as e:
            if e.permanent:
                return self._all(rcpts, Reply(550, f"5.1.2 {e}"))
            return self._all(rcpts, Reply(451, f"4.4.3 {e}"))
        policy = None
        if self.mta_sts is not None and hop.direct_to_domain and hop.mx_lookup:
            policy = await self.mta_sts.policy(domain)
        tls = tls_policy(envelope.requiretls, content)
        if tls is TlsPolicy.REQUIRETLS:
            outcome = await self._try_hosts(
                hop, domain, hosts, policy, tls, envelope, rcpts, content, finish
            )
            if isinstance(outcome, list):
                return outcome
            if outcome.ordinary or not outcome.refusals:
                # A host that could not be reached may yet qualify: try again later.
                return outcome.deferred(rcpts)
            if envelope.mail_from:
                # RFC 8689 §4.2.1: no host qualifies, so the message must not go to the
                # domain; the sender gets a non-delivery report.
                return self._all(rcpts, outcome.refusal())
            # RFC 8689 §5: a report about a REQUIRETLS message (null reverse path) is not
            # discarded for want of REQUIRETLS on the way back; it goes as ordinary mail (it
            # carries only the original's header section, see dsn.py).
            log.info(
                "REQUIRETLS report sent without REQUIRETLS",
                extra=kv(domain=domain, reason=str(outcome.refusal())),
            )
            envelope = dataclasses.replace(envelope, requiretls=False)
            tls = TlsPolicy.DEFAULT
        outcome = await self._try_hosts(
            hop, domain, hosts, policy, tls, envelope, rcpts, content, finish
        )
        if isinstance(outcome, list):
            return outcome
        # No host took the transaction: the last session failure is what the sender sees,
        # deferred (a 5xx greeting from every MX is no per-recipient verdict).
        return outcome.deferred(rcpts)

    async def _try_hosts(
        self,
        hop: NextHop,
        domain: str,
        hosts: list[MxHost],
        policy: Policy | None,
        tls: TlsPolicy,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None,
    ) -> list[RecipientResult] | _NoHost:
        """The hosts in order until one takes the transaction (its per-recipient results), or
        why none did."""
        requiretls = tls is TlsPolicy.REQUIRETLS
        enforce = policy is not None and policy.enforce and tls is TlsPolicy.DEFAULT
        if policy is not None and policy.enforce and tls is TlsPolicy.TLS_OPTIONAL:
            # RFC 8689 §4.2.2: the sender asked for delivery even where TLS cannot be had.
            log.info("MTA-STS enforce relaxed: TLS-Required: No", extra=kv(domain=domain))
        verify = enforce or requiretls
        # RFC 8689 §4.2.1 step 2: a host taken from the recipient domain's MX records must be
        # validated, by DNSSEC (signed MX records) or by the domain's MTA-STS policy listing it.
        # An operator's route and a domain without MX records (its own address) need not be.
        validate_mx = requiretls and hop.direct_to_domain and hop.mx_lookup
        failed = _NoHost(Reply(451, f"4.4.1 no MX host of {domain} could be reached"))
        for host in hosts:
            resolved: HostAddresses | None = None
            dane: DanePolicy | None = None
            if self.settings.dane and not _is_ip(host.name):
                try:
                    resolved = await resolve_host(self.resolver, host.name)
                    if resolved.dnssec and resolved.addresses:
                        # RFC 7672 §2.2.2: the TLSA records of a host whose addresses are
                        # signed, whether or not the MX records were (§2.2.1).
                        dane = await dane_lookup(
                            self.resolver, host.name, hop.port, host.dnssec, domain
                        )
                except DnsError as e:
                    failed.fail(Reply(451, f"4.4.3 {e}"))
                    continue
                except TlsaLookupFailed as e:
                    # RFC 7672 §2.2: a host whose TLSA records cannot be had gets no mail.
                    log.info("TLSA look-up failed", extra=kv(mx=host.name, error=str(e)))
                    failed.fail(Reply(451, f"4.7.5 {e}"))
                    continue
            listed = policy is not None and policy.mode != "none" and policy.allows(host.name)
            # RFC 8461 §2: a host DANE authenticates is not held to the MTA-STS policy.
            if dane is None and policy is not None and policy.mode != "none" and not listed:
                # RFC 8461 §4.1: an MX not named by the policy is not a candidate (enforce).
                log.warning(
                    "MX not in MTA-STS policy",
                    extra=kv(domain=domain, mx=host.name, mode=policy.mode),
                )
                if enforce:
                    failed.skip(
                        Reply(451, f"4.7.5 MX {host.name} is not in {domain}'s MTA-STS policy")
                    )
                    continue
            # RFC 8689 §4.2.1 step 2: signed MX records validate the host, as a policy does.
            if validate_mx and not host.implicit and not listed and not host.dnssec:
                failed.refuse(
                    no_secure_session(
                        f"MX {host.name} of {domain} is not validated by an MTA-STS policy "
                        "(nor by DNSSEC)"
                    )
                )
                continue
            if resolved is not None:
                addresses = resolved.addresses
            else:
                try:
                    addresses = (
                        [host.name] if _is_ip(host.name) else
                        (await resolve_host(self.resolver, host.name)).addresses
                    )  # fmt: skip
                except DnsError as e:
                    failed.fail(Reply(451, f"4.4.3 {e}"))
                    continue
            if not addresses:
                if host.implicit:  # no MX and no address: nowhere to deliver (RFC 5321 §5.1)
                    return self._all(
                        rcpts, Reply(550, f"5.1.2 {host.name} has no MX or address records")
                    )
                failed.fail(Reply(451, f"4.4.3 MX host {host.name} has no address records"))
                continue
            # DANE's own authentication replaces the PKIX check; with no usable record it only
            # makes TLS mandatory, and a REQUIRETLS message still needs PKIX.
            pkix = verify and not (dane is not None and dane.authenticates)
            # Both demands in the cache key: a session DANE only encrypted never carries a
            # message that needs PKIX, nor the other way round.
            mode = ("pkix " if pkix else "") + (dane.key if dane is not None else "")
            for address in addresses:
                key: _Key = (host.name, address, hop.port, mode)
                try:
                    session = await self._session(key, pkix, dane)
                except SessionError as e:
                    _session_failed(failed, e, host.name, address, requiretls)
                    continue
                if requiretls and not session.requiretls_ready:
                    refusal = not_offered(f"{host.name}[{address}]")
                    log.info(
                        "MX does not offer REQUIRETLS", extra=kv(mx=host.name, address=address)
                    )
                    failed.refuse(refusal)
                    # RFC 8689 §4.2.1: the session may still carry other, unprotected mail.
                    await self.cache.give(key, session)
                    continue
                try:
                    replies = await session.send(envelope, rcpts, content, finish)
                except SessionError as e:
                    # The idle connection was gone and a new one failed: nothing was sent.
                    await session.close()
                    _session_failed(failed, e, host.name, address, requiretls)
                    continue
                except FinishFailed as e:
                    # Signing keys unavailable (auth down): retry later, never send unsigned.
                    await self.cache.give(key, session)
                    log.warning("DKIM signing failed; deferring", extra=kv(error=str(e)))
                    return self._all(rcpts, Reply(451, f"4.7.0 DKIM signing unavailable: {e}"))
                except (aiosmtplib.SMTPException, OSError) as e:
                    # The peer may or may not have the message (lost after DATA): defer, as
                    # RFC 5321 §6.1 accepts a possible duplicate over a loss.
                    await session.close()
                    where = f"{host.name}[{address}]:{hop.port}"
                    return self._all(rcpts, Reply(451, f"4.4.2 lost connection with {where}: {e}"))
                await self.cache.give(key, session)
                if requiretls:
                    log.info(
                        "relayed with REQUIRETLS",
                        extra=kv(mx=host.name, address=address, recipients=len(rcpts)),
                    )
                results = [_result(r.address, replies[r.address], host.name) for r in rcpts]
                if not session.peer_has_dsn:
                    results = [
                        dataclasses.replace(r, relayed_without_dsn=True)
                        if r.outcome is Outcome.RELAYED else r
                        for r in results
                    ]  # fmt: skip
                return results
        return failed

    async def _session(self, key: _Key, verify: bool, dane: DanePolicy | None) -> SmtpSession:
        cached = self.cache.take(key)
        if cached is not None:
            return cached  # no RSET probe: see SmtpSession.send
        mx_name, address, port, _ = key
        session = SmtpSession(
            mx_name,
            address,
            port,
            self.settings.hostname,
            self.settings.relay_connect_timeout_seconds,
            self.settings.relay_command_timeout_seconds,
        )
        await session.open(self._verify if verify else None, dane)
        return session
