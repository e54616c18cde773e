"""The listeners: IMAP with STARTTLS and IMAP over implicit TLS (RFC 8314), one session each."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from postmesh.common.logging import get_logger, kv
from postmesh.common.proxy_protocol import (
    Address,
    Listener,
    start_proxied_server,
    stream_protocol_factory,
)
from postmesh.imap_gw.backend import Authenticator, MailStore
from postmesh.imap_gw.connection import Connection
from postmesh.imap_gw.limits import UserSessions
from postmesh.imap_gw.mailbox_events import Registry
from postmesh.imap_gw.session import Session
from postmesh.imap_gw.settings import ImapSettings

log = get_logger(__name__)


class ImapServer:
    def __init__(
        self,
        settings: ImapSettings,
        store: MailStore,
        auth: Authenticator,
        tls_context: ssl.SSLContext | None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        # Sessions by user, for mailbox events (one per process, shared by both listeners).
        self.registry = registry if registry is not None else Registry()
        # Logged-in sessions per user on this replica (imap_max_sessions_per_user).
        self.user_sessions = UserSessions(settings.imap_max_sessions_per_user)
        self.store = store
        self.auth = auth
        self.tls_context = tls_context
        self._servers: list[Listener] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self.port = 0  # bound ports, for tests that listen on port 0
        self.tls_port = 0

    async def start(self) -> None:
        s = self.settings
        plain = await self._listen("imap", s.imap_port, None)
        self._servers.append(plain)
        self.port = plain.sockets[0].getsockname()[1]
        if self.tls_context is not None:
            tls = await self._listen("imaps", s.imaps_port, self.tls_context)
            self._servers.append(tls)
            self.tls_port = tls.sockets[0].getsockname()[1]
        log.info(
            "imap listening",
            extra=kv(
                host=s.imap_host,
                port=self.port,
                tls_port=self.tls_port or None,
                proxy_protocol=s.proxy_protocol,
            ),
        )

    async def _listen(self, listener: str, port: int, tls: ssl.SSLContext | None) -> Listener:
        s = self.settings
        handler = self._handler(listener)
        handshake = 30 if tls is not None else None
        # The reader's limit is the command line limit (see Connection._read_line).
        if s.proxy_protocol:
            # Behind a load balancer: a PROXY header first (before TLS on imaps), naming the
            # client the session serves.
            return await start_proxied_server(
                stream_protocol_factory(handler, s.imap_max_line_bytes),
                s.imap_host,
                port,
                tls=tls,
                tls_handshake_timeout=handshake,
                header_timeout=s.proxy_protocol_timeout_seconds,
                trusted_networks=s.trusted_proxy_networks(),
                name=listener,
            )
        return await asyncio.start_server(
            lambda r, w: handler(r, w, None),
            s.imap_host,
            port,
            ssl=tls,
            ssl_handshake_timeout=handshake,
            limit=s.imap_max_line_bytes,
        )

    def _handler(
        self, listener: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Address | None], Awaitable[None]]:
        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Address | None
        ) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._sessions.add(task)
            try:
                conn = Connection(
                    reader,
                    writer,
                    max_line=self.settings.imap_max_line_bytes,
                    max_literal=self.settings.imap_max_literal_bytes,
                    max_command=self.settings.imap_max_command_bytes,
                    timeout=self.settings.imap_preauth_timeout_seconds,
                    max_preauth_literal=self.settings.imap_max_preauth_literal_bytes,
                )
                if client is not None:
                    # The TCP peer is the load balancer; the PROXY header named the client
                    # (logs, auth remote_ip, and the loopback rule for plaintext LOGIN).
                    conn.peer_host = client[0]
                session = Session(
                    conn,
                    self.settings,
                    self.store,
                    self.auth,
                    self.tls_context,
                    listener,
                    self.registry,
                    self.user_sessions,
                )
                await session.run()
            except asyncio.CancelledError:
                # stop(): the session said BYE. Ending normally keeps asyncio's stream callback
                # from logging the cancellation as an error.
                pass
            except Exception:
                # A bug in one session must never take the listener down.
                log.exception("session crashed")
                writer.close()
            finally:
                self._sessions.discard(task)

        return handle

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
