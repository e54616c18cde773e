"""Fixtures: the SMTP edge on 127.0.0.1 port 0 with a fake auth/store backend and the real
embedded (SQLite) bus, plus a reader for what landed on the bus."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.backend import BackendUnavailable
from postmesh.common.bus import BusRecord
from postmesh.common.bus.sqlite import OWN_FILE_TOPICS, SqliteBus
from postmesh.common.mailauth.fakedns import FakeResolver
from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.memory import MemoryAccounts
from postmesh.common.sasl.scram import ScramParams, ScramVerdict
from postmesh.smtp_edge.app import SmtpEdgeService
from postmesh.smtp_edge.backend import AddressRefused, RecipientKind
from postmesh.smtp_edge.settings import SmtpEdgeSettings

LOCAL_DOMAINS = {"example.org", "mx.test"}
PASSWORDS = {"alice@example.org": "wonderland", "bob@example.org": "builder"}
ALIASES = {"sales@example.org": ["alice@example.org", "bob@example.org"]}


@dataclass
class FakeBackend:
    """In-memory auth + store, behind the same interface as the gRPC one."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    auth_calls: list[tuple[str, str, str]] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    owner_lookups: list[str] = field(default_factory=list)
    store_down: bool = False
    auth_down: bool = False

    accounts: MemoryAccounts = field(default_factory=lambda: MemoryAccounts(dict(PASSWORDS)))

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        if self.auth_down:
            raise BackendUnavailable("auth down")
        self.auth_calls.append((username, mechanism, remote_ip))
        return await self.accounts.check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        if self.auth_down:
            raise BackendUnavailable("auth down")
        return await self.accounts.scram_params(username, remote_ip=remote_ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        return await self.accounts.verify_scram(username, auth_message, proof, remote_ip=remote_ip)

    async def resolve_recipient(self, address: str) -> RecipientKind:
        if self.auth_down:
            raise BackendUnavailable("auth down")
        self.resolved.append(address)
        local, _, domain = address.rpartition("@")
        if address == "postmaster":
            return RecipientKind.LOCAL_USER  # auth's POSTMESH_AUTH_POSTMASTER
        if local == "malformed":
            raise AddressRefused(f"invalid address {address!r}")  # auth's INVALID_ARGUMENT
        if domain.lower() not in LOCAL_DOMAINS:
            return RecipientKind.REMOTE
        if address.lower() in PASSWORDS or address.lower() in ALIASES:
            return RecipientKind.LOCAL_USER
        if local.lower() == "postmaster":
            return RecipientKind.LOCAL_USER
        return RecipientKind.UNKNOWN_LOCAL

    async def address_owners(self, address: str) -> list[str]:
        if self.auth_down:
            raise BackendUnavailable("auth down")
        self.owner_lookups.append(address)
        key = address.lower()
        return [key] if key in PASSWORDS else list(ALIASES.get(key, []))

    async def put_blob(self, data: bytes) -> str:
        if self.store_down:
            raise BackendUnavailable("store down")
        blob_id = hashlib.sha256(data).hexdigest()
        self.blobs[blob_id] = data
        return blob_id


class FailingBus(SqliteBus):
    """The real embedded bus whose publish fails, as a Kafka outage would."""

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        raise ConnectionError("bus unavailable")


@dataclass
class Edge:
    service: SmtpEdgeService
    backend: FakeBackend
    bus_path: Path
    settings: SmtpEdgeSettings
    dns: FakeResolver

    @property
    def mx(self) -> int:
        return self.service.ports["mx"]

    @property
    def submission(self) -> int:
        return self.service.ports["submission"]

    @property
    def submissions(self) -> int:
        return self.service.ports["submissions"]

    async def records(self, expected: int, wait: float = 0.5) -> list[BusRecord]:
        """Everything on postmesh.inbound, read back through a second bus client. Waits until
        ``expected`` records are there, then ``wait`` more seconds to catch any extra."""
        got: list[BusRecord] = []
        reader = SqliteBus(self.bus_path, OWN_FILE_TOPICS)
        await reader.start()

        async def collect(rec: BusRecord) -> None:
            got.append(rec)

        task = asyncio.create_task(reader.consume([topics.INBOUND], None, collect))
        try:
            for _ in range(100):
                if len(got) >= expected:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(wait)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await reader.stop()
        return got

    async def messages(self, expected: int) -> list[events_pb2.InboundMessage]:
        out = []
        for rec in await self.records(expected):
            msg = events_pb2.InboundMessage()
            msg.ParseFromString(rec.value)
            assert rec.key == msg.queue_id
            out.append(msg)
        return out


EdgeFactory = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def make_edge(tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    started: list[SmtpEdgeService] = []

    async def make(
        *, failing_bus: bool = False, dns: FakeResolver | None = None, **overrides: Any
    ) -> Edge:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "hostname": "mx.test",
            "smtp_host": "127.0.0.1",
            "smtp_mx_port": 0,
            "smtp_submission_port": 0,
            "smtp_submissions_port": 0,
            "ops_port": 0,
            "smtp_auth_failure_delay_seconds": 0,
            "smtp_max_message_bytes": 64 * 1024,
            "smtp_inline_limit_bytes": 8 * 1024,
        }
        values.update(overrides)
        settings = SmtpEdgeSettings(**values)
        bus_path = tmp_path / f"bus-{len(started)}.sqlite3"
        # The services' layout (create_bus): postmesh.inbound in a file of its own.
        bus = FailingBus(bus_path) if failing_bus else SqliteBus(bus_path, OWN_FILE_TOPICS)
        backend = FakeBackend()
        # DNS is a fake zone here (no lookups leave the test); integration tests use dnsmasq.
        resolver = dns or FakeResolver()
        service = SmtpEdgeService(settings, backend=backend, bus=bus, resolver=resolver)
        await service.start()
        started.append(service)
        return Edge(service, backend, bus_path, settings, resolver)

    yield make
    for service in started:
        await service.stop()


@pytest.fixture
async def edge(make_edge: EdgeFactory) -> Edge:
    return await make_edge()


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    """A client context that accepts the self-signed development certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
