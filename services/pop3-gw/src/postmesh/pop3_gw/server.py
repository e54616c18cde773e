"""The pop3-gw service: a plain listener (with STLS) and an implicit-TLS listener."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger, kv
from postmesh.common.ops import ReadinessCheck
from postmesh.common.proxy_protocol import (
    Address,
    Listener,
    start_proxied_server,
    stream_protocol_factory,
)
from postmesh.common.service import Service
from postmesh.common.tls import settings_server_context
from postmesh.pop3_gw.backend import MailBackend
from postmesh.pop3_gw.grpc_backend import GrpcBackend
from postmesh.pop3_gw.session import Pop3Session
from postmesh.pop3_gw.settings import Pop3Settings

log = get_logger(__name__)

# asyncio.start_server's default StreamReader limit, kept for the PROXY protocol listeners.
STREAM_LIMIT = 64 * 1024


class Pop3Service(Service):
    name = "pop3-gw"

    def __init__(
        self,
        settings: Pop3Settings,
        backend: MailBackend | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        # The gRPC backend is made in start(): grpc.aio channels bind to the running event
        # loop, and service.main builds the service before asyncio.run starts one.
        self._backend = backend
        self._tls_context = tls_context
        self._servers: list[Listener] = []
        self._sessions: set[asyncio.Task[None]] = set()
        # Bound ports (differ from the settings when those are 0, as in tests).
        self.port = 0
        self.tls_port = 0

    @property
    def backend(self) -> MailBackend:
        if self._backend is None:
            raise RuntimeError("Pop3Service.start() has not run")
        return self._backend

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        implicit_tls: bool,
        client: Address | None = None,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            session = Pop3Session(
                reader,
                writer,
                backend=self.backend,
                settings=self.settings,
                tls_context=self._tls_context,
                implicit_tls=implicit_tls,
            )
            if client is not None:
                # The TCP peer is the load balancer; the PROXY header named the client
                # (logs, auth remote_ip, and the loopback rule for USER/PASS).
                session.peer_host = client[0]
            await session.run()
        except Exception:  # a bug in one session must not take the listener down
            log.exception("session crashed")
            writer.close()
        finally:
            if task is not None:
                self._sessions.discard(task)

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handle(reader, writer, implicit_tls=False)

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handle(reader, writer, implicit_tls=True)

    async def _proxied_listener(self, port: int, tls: ssl.SSLContext | None) -> Listener:
        """Behind a load balancer: a PROXY header first (before TLS on pop3s)."""
        s = self.settings

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Address
        ) -> None:
            await self._handle(reader, writer, implicit_tls=tls is not None, client=client)

        return await start_proxied_server(
            stream_protocol_factory(handle, STREAM_LIMIT),
            s.pop3_host,
            port,
            tls=tls,
            tls_handshake_timeout=s.pop3_tls_handshake_timeout_seconds,
            header_timeout=s.proxy_protocol_timeout_seconds,
            trusted_networks=s.trusted_proxy_networks(),
            name="pop3s" if tls is not None else "pop3",
        )

    async def start(self) -> None:
        s = self.settings
        if self._backend is None:
            self._backend = GrpcBackend(
                s.store_address,
                s.auth_address,
                s.grpc_deadline_seconds,
                s.pop3_list_page_size,
                GrpcSecurity.from_settings(s),
            )
        if self._tls_context is None:
            self._tls_context = settings_server_context(s)
        plain: Listener
        implicit: Listener
        if s.proxy_protocol:
            plain = await self._proxied_listener(s.pop3_port, None)
            implicit = await self._proxied_listener(s.pop3s_port, self._tls_context)
        else:
            plain = await asyncio.start_server(self._plain, s.pop3_host, s.pop3_port)
            implicit = await asyncio.start_server(
                self._tls,
                s.pop3_host,
                s.pop3s_port,
                ssl=self._tls_context,
                ssl_handshake_timeout=s.pop3_tls_handshake_timeout_seconds,
            )
        self._servers = [plain, implicit]
        self.port = plain.sockets[0].getsockname()[1]
        self.tls_port = implicit.sockets[0].getsockname()[1]
        log.info(
            "pop3 listening",
            extra=kv(
                host=s.pop3_host,
                port=self.port,
                tls_port=self.tls_port,
                proxy_protocol=s.proxy_protocol,
            ),
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        # Open sessions end without UPDATE: RFC 1939 §6, nothing is deleted.
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        if self._backend is not None:
            await self._backend.close()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def backend() -> bool:
            return self._backend is not None and await self._backend.ready()

        return {"backend": backend}
