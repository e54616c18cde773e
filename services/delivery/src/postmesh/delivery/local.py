"""Local delivery: store.Deliver for each mailbox owner an address resolves to."""

from __future__ import annotations

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.delivery.model import Outcome, RecipientResult


class LocalDelivery:
    def __init__(self, store: store_pb2_grpc.StoreServiceStub, deadline: float) -> None:
        self.store = store
        self.deadline = deadline

    async def deliver(
        self, msg: events_pb2.InboundMessage, recipient: str, users: list[str]
    ) -> RecipientResult:
        """Idempotent: store.Deliver dedups per (queue id, user, mailbox), so a redelivered
        Kafka record makes no second copy. gRPC errors propagate: the bus retries the record."""
        for user in users:
            req = store_pb2.DeliverRequest(queue_id=msg.queue_id, user=user)
            if msg.WhichOneof("content") == "blob_id":
                req.blob_id = msg.blob_id
            else:
                req.content = msg.inline_content
            if msg.received_at_ms:
                req.internal_date = msg.received_at_ms // 1000
            await self.store.Deliver(req, timeout=self.deadline)
        return RecipientResult(recipient, Outcome.DELIVERED, "250", "2.0.0", "delivered to mailbox")

    async def content(self, msg: events_pb2.InboundMessage) -> bytes:
        """The message bytes, inline or from the claim-checked blob."""
        if msg.WhichOneof("content") != "blob_id":
            return msg.inline_content
        chunks = [
            c.data
            async for c in self.store.GetBlob(
                store_pb2.GetBlobRequest(blob_id=msg.blob_id), timeout=self.deadline
            )
        ]
        return b"".join(chunks)
