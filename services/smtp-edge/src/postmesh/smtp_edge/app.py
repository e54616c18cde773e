"""Wires the SMTP edge: three listeners on one event loop, the bus producer, auth/store stubs."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from postmesh.common.bus import Bus, create_bus
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth.dnsclient import DnsClient, Resolver
from postmesh.common.ops import ReadinessCheck
from postmesh.common.proxy_protocol import Address, Listener, start_proxied_server
from postmesh.common.service import Service
from postmesh.common.stubs import auth_stub, store_stub
from postmesh.common.tls import settings_server_context
from postmesh.smtp_edge.backend import EdgeBackend, GrpcEdgeBackend
from postmesh.smtp_edge.content_scan import RspamdScanner
from postmesh.smtp_edge.inbound_auth import AuthPolicy, InboundAuthenticator
from postmesh.smtp_edge.queueing import MessageQueuer, Queued
from postmesh.smtp_edge.recipient_cache import CachedRecipients
from postmesh.smtp_edge.session import (
    MX,
    SUBMISSION,
    SUBMISSIONS,
    ListenerPolicy,
    listener_policies,
)
from postmesh.smtp_edge.settings import SmtpEdgeSettings
from postmesh.smtp_edge.smtp import EdgeSMTP
from postmesh.smtp_edge.throttle import MessageRate

log = get_logger(__name__)

# Sessions in a transaction get this long to finish when the service stops.
SHUTDOWN_GRACE_SECONDS = 10.0


# Answers kept for their TTL (SPF, DKIM keys, DMARC policies, reverse names): at most this many.
DNS_CACHE_ENTRIES = 10_000


class SmtpEdgeService(Service):
    name = "smtp-edge"

    def __init__(
        self,
        settings: SmtpEdgeSettings,
        backend: EdgeBackend | None = None,
        bus: Bus | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.resolver: Resolver = resolver or DnsClient(
            settings.dns_servers, settings.dns_timeout_seconds, cache_entries=DNS_CACHE_ENTRIES
        )
        self.authenticator = InboundAuthenticator(
            self.resolver,
            settings.hostname,
            AuthPolicy(
                enabled=settings.smtp_inbound_auth,
                dmarc_reject=settings.smtp_dmarc_reject,
                quarantine_mailbox=settings.smtp_dmarc_quarantine_mailbox,
            ),
        )
        self.bus = bus or create_bus(settings, "smtp-edge")
        # The gRPC backend is made in start(): grpc.aio channels belong to the running loop,
        # and main() builds the service before asyncio.run starts one.
        self._backend = backend
        self.queuer: MessageQueuer | None = None
        self.servers: dict[str, Listener] = {}
        # Bound ports by listener name (tests bind port 0).
        self.ports: dict[str, int] = {}
        self.sessions: set[EdgeSMTP] = set()
        self.inflight: set[asyncio.Task[Queued]] = set()
        self.message_rate = MessageRate(settings.smtp_max_messages_per_minute)
        self.scanner = (
            RspamdScanner(settings.smtp_rspamd_url, settings.smtp_rspamd_timeout_seconds)
            if settings.smtp_rspamd_url
            else None
        )

    def _port(self, listener: str) -> int:
        return {
            MX: self.settings.smtp_mx_port,
            SUBMISSION: self.settings.smtp_submission_port,
            SUBMISSIONS: self.settings.smtp_submissions_port,
        }[listener]

    async def start(self) -> None:
        if self._backend is None:
            security = GrpcSecurity.from_settings(self.settings)
            self._backend = GrpcEdgeBackend(
                auth_stub(self.settings.auth_address, security),
                store_stub(self.settings.store_address, security),
                self.settings.grpc_deadline_seconds,
            )
        if self.settings.smtp_recipient_cache_seconds > 0 and not isinstance(
            self._backend, CachedRecipients
        ):
            self._backend = CachedRecipients(
                self._backend, self.settings.smtp_recipient_cache_seconds
            )
        self.queuer = MessageQueuer(
            self.bus, self._backend, self.settings.hostname, self.settings.smtp_inline_limit_bytes
        )
        if "." not in self.settings.hostname:
            # As Postfix warns about a myhostname without a domain: remote MTAs see it in the
            # greeting and the Received header, and some refuse a non-FQDN.
            log.warning(
                "POSTMESH_HOSTNAME is not fully qualified",
                extra=kv(hostname=self.settings.hostname),
            )
        await self.bus.start()
        tls: ssl.SSLContext = await asyncio.to_thread(settings_server_context, self.settings)
        loop = asyncio.get_running_loop()
        for policy in listener_policies(self.settings.smtp_mx_auth_enabled):
            server = await self._listen(policy, tls, loop)
            self.servers[policy.name] = server
            self.ports[policy.name] = server.sockets[0].getsockname()[1]
            log.info(
                "smtp listener started",
                extra=kv(
                    listener=policy.name,
                    host=self.settings.smtp_host,
                    port=self.ports[policy.name],
                    proxy_protocol=self.settings.proxy_protocol,
                ),
            )

    async def _listen(
        self, policy: ListenerPolicy, tls: ssl.SSLContext, loop: asyncio.AbstractEventLoop
    ) -> Listener:
        s = self.settings
        factory = self._protocol_factory(policy, tls, loop)
        host, port = s.smtp_host, self._port(policy.name)
        implicit_tls = tls if policy.implicit_tls else None
        handshake = s.smtp_tls_handshake_timeout_seconds if policy.implicit_tls else None
        if s.proxy_protocol:
            # Not aiosmtpd's proxy_protocol_timeout: it reads the header after the implicit-TLS
            # handshake (the header comes first, on the raw socket) and answers a late header
            # with our 421; the spec wants a silent close before any greeting.
            return await start_proxied_server(
                factory,
                host,
                port,
                tls=implicit_tls,
                tls_handshake_timeout=handshake,
                header_timeout=s.proxy_protocol_timeout_seconds,
                trusted_networks=s.trusted_proxy_networks(),
                name=policy.name,
            )
        return await loop.create_server(
            lambda: factory(None), host, port, ssl=implicit_tls, ssl_handshake_timeout=handshake
        )

    def _protocol_factory(
        self, policy: ListenerPolicy, tls: ssl.SSLContext, loop: asyncio.AbstractEventLoop
    ) -> Callable[[Address | None], EdgeSMTP]:
        backend, queuer = self._backend, self.queuer
        assert backend is not None and queuer is not None

        def factory(client: Address | None) -> EdgeSMTP:
            return EdgeSMTP(
                policy=policy,
                settings=self.settings,
                backend=backend,
                queuer=queuer,
                tls_context=tls,
                sessions=self.sessions,
                inflight=self.inflight,
                loop=loop,
                resolver=self.resolver,
                authenticator=self.authenticator,
                message_rate=self.message_rate,
                client=client,
                scanner=self.scanner,
            )

        return factory

    async def stop(self) -> None:
        for server in self.servers.values():
            server.close()
        # Idle sessions go now; those inside a transaction get a grace period.
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while True:
            expired = time.monotonic() >= deadline
            for session in list(self.sessions):
                if expired or not session.busy:
                    session.shutdown()
            if expired or not any(s.busy for s in self.sessions):
                break
            await asyncio.sleep(0.05)
        # A message whose publish is under way is finished before the bus goes.
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=SHUTDOWN_GRACE_SECONDS)
        await self.bus.stop()
        if self.scanner is not None:
            await self.scanner.close()
        self.servers.clear()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def listening() -> bool:
            return len(self.servers) == 3 and all(s.is_serving() for s in self.servers.values())

        return {"bus": self.bus.ready, "listeners": listening}
