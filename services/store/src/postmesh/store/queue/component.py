"""The queue and lock services as one part of the store app: repository, depth gauge, gRPC."""

from __future__ import annotations

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.grpc import GrpcServer
from postmesh.store.queue.factory import create_queue_repository
from postmesh.store.queue.metrics import DepthMonitor
from postmesh.store.queue.repository import QueueRepository
from postmesh.store.queue.servicer import DeliveryQueueServicer, MaildropLockServicer
from postmesh.store.repository import StoreRepository
from postmesh.store.settings import StoreSettings

SERVICE_NAMES = [
    queue_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("DeliveryQueueService", "MaildropLockService")
]


class QueueComponent:
    def __init__(
        self,
        settings: StoreSettings,
        repo: QueueRepository | None = None,
        store: StoreRepository | None = None,
    ) -> None:
        """``store``: opened before and closed after this component (its connection may be
        shared)."""
        self.repo = repo or create_queue_repository(settings, store)
        self.depth = DepthMonitor(self.repo)
        self._pages = (settings.store_default_page_size, settings.store_max_page_size)

    async def open(self) -> None:
        await self.repo.open()
        self.depth.start()

    def register(self, server: GrpcServer, store: StoreRepository) -> list[str]:
        """Add both services to ``server``; returns their names for the health service."""
        server.add(
            queue_pb2_grpc.add_DeliveryQueueServiceServicer_to_server,
            DeliveryQueueServicer(self.repo, store),
        )
        server.add(
            queue_pb2_grpc.add_MaildropLockServiceServicer_to_server,
            MaildropLockServicer(
                self.repo, store, default_page_size=self._pages[0], max_page_size=self._pages[1]
            ),
        )
        return SERVICE_NAMES

    async def close(self) -> None:
        await self.depth.stop()
        await self.repo.close()
