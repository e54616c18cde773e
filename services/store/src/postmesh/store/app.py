"""The store service: repository + bus + gRPC server, with readiness = backend reachable."""

from __future__ import annotations

from postmesh.api.store.v1 import store_pb2
from postmesh.common.bus import Bus, create_bus
from postmesh.common.grpc import GrpcServer
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger
from postmesh.common.mongo import mongo_startup
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.store.events import EventPublisher
from postmesh.store.factory import create_repository
from postmesh.store.janitor import Janitor, JanitorPolicy
from postmesh.store.leftovers import Leftovers
from postmesh.store.mongodb.base import MongoBase
from postmesh.store.queue.component import QueueComponent
from postmesh.store.repository import StoreRepository
from postmesh.store.servicer import StoreServicer, add_store_service
from postmesh.store.settings import StoreSettings

log = get_logger(__name__)
SERVICE_NAME = store_pb2.DESCRIPTOR.services_by_name["StoreService"].full_name


class StoreApp(Service):
    name = "store"

    def __init__(
        self,
        settings: StoreSettings,
        *,
        repo: StoreRepository | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo or create_repository(settings)
        self.bus = bus or create_bus(settings, "store")
        # Deferred queue and maildrop locks; on SQLite, on the store's connection.
        self.queue = QueueComponent(settings, store=self.repo)
        # Made in start(): grpc.aio binds a server to the running event loop, and the service
        # object is built before asyncio.run() starts it.
        self.grpc: GrpcServer | None = None
        self.events: EventPublisher | None = None
        self._started: list[str] = []
        targets = [r for r in (self.repo, self.queue.repo) if isinstance(r, Leftovers)]
        self.janitor = Janitor(targets, janitor_policy(settings))

    @property
    def port(self) -> int:
        """The bound gRPC port (useful with port 0)."""
        return self.grpc.port if self.grpc is not None else 0

    async def start(self) -> None:
        async with mongo_startup(self.settings):
            await self.repo.open()
            self._started.append("repo")
            await self.queue.open()
            self._started.append("queue")
        try:
            await self.bus.start()
            self._started.append("bus")
        except Exception:
            # Events are hints; the store serves without them (publishes are then logged).
            log.exception("bus did not start; mailbox events will not be published")
        self.events = EventPublisher(self.bus, self.settings.store_event_publish_timeout_seconds)
        servicer = StoreServicer(
            self.repo,
            self.events,
            default_page_size=self.settings.store_default_page_size,
            max_page_size=self.settings.store_max_page_size,
        )
        self.grpc = GrpcServer(
            self.settings.store_listen, GrpcSecurity.from_settings(self.settings)
        )
        self.grpc.add(add_store_service, servicer)
        queue_services = self.queue.register(self.grpc, self.repo)
        await self.grpc.start([SERVICE_NAME, *queue_services])
        self._started.append("grpc")
        self.janitor.start()
        self._started.append("janitor")
        if isinstance(self.repo, MongoBase):
            self.repo.replica_watch.start()
            self._started.append("replica-watch")

    async def stop(self) -> None:
        if "replica-watch" in self._started and isinstance(self.repo, MongoBase):
            await self.repo.replica_watch.stop()
        if "janitor" in self._started:
            await self.janitor.stop()
        if "grpc" in self._started and self.grpc is not None:
            await self.grpc.stop()
        if self.events is not None:
            await self.events.close()  # the events of the last changes, before the bus stops
        if "bus" in self._started:
            await self.bus.stop()
        if "queue" in self._started:
            await self.queue.close()
        if "repo" in self._started:
            await self.repo.close()
        self._started.clear()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"store-backend": self.repo.ping, "queue-backend": self.queue.repo.ping}


def janitor_policy(settings: StoreSettings) -> JanitorPolicy:
    return JanitorPolicy(
        interval_seconds=settings.store_janitor_interval_seconds,
        batch=settings.store_janitor_batch,
        max_batches=settings.store_janitor_max_batches,
        tombstone_retention_seconds=settings.store_tombstone_retention_seconds,
        delivery_retention_seconds=settings.store_delivery_retention_seconds,
        orphan_grace_seconds=settings.store_janitor_orphan_grace_seconds,
    )
