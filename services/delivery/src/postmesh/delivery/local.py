"""Local delivery: store.Deliver for each mailbox owner an address resolves to."""

from __future__ import annotations

import grpc

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.logging import get_logger, kv
from postmesh.common.store_client.calls import CallStream, carried_or_unary
from postmesh.delivery.model import Outcome, RecipientResult

log = get_logger(__name__)

# Store answers that retrying cannot change: the recipient fails with a bounce (RFC 3463 codes).
# A full mailbox is permanent, as Dovecot's default quota_full_tempfail=no.
_PERMANENT = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("552", "5.2.2", "mailbox full"),
    grpc.StatusCode.INVALID_ARGUMENT: ("554", "5.6.0", "message rejected by the mail store"),
    grpc.StatusCode.NOT_FOUND: ("554", "5.3.0", "message content no longer available"),
}


class LocalDelivery:
    def __init__(
        self,
        store: store_pb2_grpc.StoreServiceStub,
        deadline: float,
        calls: CallStream | None = None,
    ) -> None:
        self.store = store
        self.deadline = deadline
        # Deliver as messages on one stream (ADR 0051, ADR 0071): about half the store's gRPC
        # cost of a new call, and Deliver is idempotent, so what the stream could not answer
        # is made again as a unary call.
        self.calls = calls

    async def deliver(
        self, msg: events_pb2.InboundMessage, recipient: str, users: list[str]
    ) -> RecipientResult:
        """Idempotent: store.Deliver dedups per (queue id, user, mailbox), so a redelivered
        Kafka record makes no second copy. Permanent store answers (quota, invalid content) make
        a bounce; any other gRPC error propagates and the bus retries the record."""
        for user in users:
            req = store_pb2.DeliverRequest(queue_id=msg.queue_id, user=user, mailbox=msg.mailbox)
            if msg.WhichOneof("content") == "blob_id":
                req.blob_id = msg.blob_id
            else:
                req.content = msg.inline_content
            if msg.received_at_ms:
                req.internal_date = msg.received_at_ms // 1000
            try:
                await self._deliver_or_inbox(req)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _PERMANENT:
                    raise
                code, status, text = _PERMANENT[e.code()]
                log.warning("store refused delivery", extra=kv(user=user, detail=e.details()))
                return RecipientResult(
                    recipient, Outcome.BOUNCED, code, status, f"{text}: {e.details()}"
                )
        return RecipientResult(recipient, Outcome.DELIVERED, "250", "2.0.0", "delivered to mailbox")

    async def _deliver_or_inbox(self, req: store_pb2.DeliverRequest) -> None:
        """The edge's target mailbox (Junk for DMARC quarantine), or INBOX if this user has
        none by that name: filing must never turn into a bounce."""
        try:
            await self._deliver(req)
        except grpc.aio.AioRpcError as e:
            if not req.mailbox or e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            log.info("target mailbox missing; delivering to INBOX", extra=kv(mailbox=req.mailbox))
            req.mailbox = ""
            await self._deliver(req)

    async def _deliver(self, req: store_pb2.DeliverRequest) -> None:
        # Idempotent: the store deduplicates by (queue id, user, mailbox), so one the stream
        # could not answer is made again as a unary call even if it was sent.
        await carried_or_unary(
            self.calls, self.store.Deliver, "Deliver", req, store_pb2.DeliverResponse,
            self.deadline,
        )  # fmt: skip

    async def close(self) -> None:
        if self.calls is not None:
            await self.calls.close()

    async def content(self, msg: events_pb2.InboundMessage) -> bytes:
        """The message bytes, inline or from the claim-checked blob."""
        if msg.WhichOneof("content") != "blob_id":
            return msg.inline_content
        try:
            chunks = [
                c.data
                async for c in self.store.GetBlob(
                    store_pb2.GetBlobRequest(blob_id=msg.blob_id), timeout=self.deadline
                )
            ]
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return b""  # the bounce then says what happened without quoting the message
        return b"".join(chunks)
