"""The imap-gw service: listeners on gRPC-backed store and auth, plus readiness checks."""

from __future__ import annotations

from typing import cast

import grpc

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.common.bus import Bus, create_bus
from postmesh.common.grpc import channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.common.tls import settings_server_context
from postmesh.imap_gw.grpc_backend import GrpcAuthenticator, GrpcMailStore
from postmesh.imap_gw.mailbox_events import MailboxEventConsumer, Registry
from postmesh.imap_gw.server import ImapServer
from postmesh.imap_gw.settings import ImapSettings


class ImapGateway(Service):
    name = "imap-gw"

    def __init__(self, settings: ImapSettings, bus: Bus | None = None) -> None:
        self.settings = settings
        # Made here so a bad certificate setting stops the service before it listens.
        self.tls_context = settings_server_context(settings)
        self.server: ImapServer | None = None
        # grpc.aio channels belong to the running event loop: created in start().
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.bus: Bus | None = bus
        self.events: MailboxEventConsumer | None = None

    async def start(self) -> None:
        s = self.settings
        security = GrpcSecurity.from_settings(s)
        self._channels = {
            "store": channel(s.store_address, security, "store"),
            "auth": channel(s.auth_address, security, "auth"),
        }
        # On an aio channel the generated stubs are the async ones (see the .pyi overloads).
        auth_stub = cast(
            "auth_pb2_grpc.AuthServiceAsyncStub",
            auth_pb2_grpc.AuthServiceStub(self._channels["auth"]),
        )
        store = GrpcMailStore(
            self._channels["store"], s.grpc_deadline_seconds, call_stream=s.imap_store_call_stream
        )
        auth = GrpcAuthenticator(auth_stub, s.grpc_deadline_seconds)
        registry = Registry()
        if s.imap_mailbox_events:
            if self.bus is None:
                self.bus = create_bus(s, "imap-gw")
            await self.bus.start()
            self.events = MailboxEventConsumer(self.bus, registry)
            self.events.start()
        self.server = ImapServer(s, store, auth, self.tls_context, registry)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.events is not None:
            await self.events.stop()
            self.events = None
        if self.bus is not None and self.settings.imap_mailbox_events:
            await self.bus.stop()
        for ch in self._channels.values():
            await ch.close()
        self._channels = {}

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        def check(name: str, service: str) -> ReadinessCheck:
            async def ready() -> bool:
                ch = self._channels.get(name)
                return ch is not None and await is_serving(ch, service)

            return ready

        return {
            "store": check("store", "postmesh.api.store.v1.StoreService"),
            "auth": check("auth", "postmesh.api.auth.v1.AuthService"),
        }
