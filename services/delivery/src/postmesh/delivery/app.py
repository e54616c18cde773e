"""Wires the delivery service: bus consumer -> per-recipient routing -> store / remote relay."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Counter, Histogram

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus import Bus, BusRecord, create_bus
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger, kv, log_context
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.common.stubs import auth_stub, store_stub
from postmesh.delivery.dsn import build_failure_dsn, wants_failure_notice
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.settings import DeliverySettings

log = get_logger(__name__)

RECIPIENTS = Counter(
    "postmesh_delivery_recipients_total", "Recipients handled, by outcome.", ["outcome"]
)
LATENCY = Histogram(
    "postmesh_delivery_latency_seconds",
    "From acceptance at the SMTP edge to the end of delivery, per message.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_OUTCOMES = {
    Outcome.DELIVERED: events_pb2.DeliveryEvent.OUTCOME_DELIVERED,
    Outcome.RELAYED: events_pb2.DeliveryEvent.OUTCOME_RELAYED,
    Outcome.BOUNCED: events_pb2.DeliveryEvent.OUTCOME_BOUNCED,
}


class DeliveryService(Service):
    name = "delivery"

    def __init__(self, settings: DeliverySettings, bus: Bus | None = None) -> None:
        self.settings = settings
        self.bus = bus or create_bus(settings, "delivery")
        security = GrpcSecurity.from_settings(settings)
        self.auth = auth_stub(settings.auth_address, security)
        self.local = LocalDelivery(
            store_stub(settings.store_address, security), settings.grpc_deadline_seconds
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.bus.start()
        self._task = asyncio.create_task(
            self.bus.consume(
                [topics.INBOUND],
                self.settings.delivery_group,
                self.handle,
                concurrency=self.settings.delivery_concurrency,
            )
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.bus.stop()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"bus": self.bus.ready}

    async def handle(self, record: BusRecord) -> None:
        msg = events_pb2.InboundMessage()
        try:
            msg.ParseFromString(record.value)
        except Exception:
            # A record we cannot read can never be delivered; retrying would block the partition.
            log.error(
                "undecodable inbound record dropped", extra=kv(key=record.key, offset=record.offset)
            )
            return
        with log_context(queue_id=msg.queue_id):
            failures: list[RecipientResult] = []
            for rcpt in msg.recipients:
                result = await self.route(msg, rcpt.address)
                if result.outcome is Outcome.BOUNCED and wants_failure_notice(msg, rcpt):
                    failures.append(result)
                RECIPIENTS.labels(result.outcome.value).inc()
                log.info(
                    "recipient done",
                    extra=kv(
                        rcpt=result.recipient,
                        outcome=result.outcome.value,
                        status=result.status,
                        diagnostic=result.diagnostic,
                    ),
                )
                await self._publish_outcome(msg.queue_id, result)
            if failures:
                await self._bounce(msg, failures)
            if msg.received_at_ms:
                LATENCY.observe(max(0.0, time.time() - msg.received_at_ms / 1000))

    async def route(self, msg: events_pb2.InboundMessage, address: str) -> RecipientResult:
        resolved = await self.auth.ResolveRecipient(
            auth_pb2.ResolveRecipientRequest(address=address),
            timeout=self.settings.grpc_deadline_seconds,
        )
        if resolved.kind == auth_pb2.RECIPIENT_KIND_LOCAL_USER:
            return await self.local.deliver(msg, address, list(resolved.users))
        if resolved.kind == auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL:
            # The user was removed between RCPT TO and delivery (RFC 3463 X.1.1).
            return RecipientResult(address, Outcome.BOUNCED, "550", "5.1.1", "user unknown")
        return RecipientResult(
            address,
            Outcome.BOUNCED,
            "550",
            "5.4.4",
            "remote delivery is not enabled on this system",
        )

    async def _bounce(
        self, msg: events_pb2.InboundMessage, failures: list[RecipientResult]
    ) -> None:
        """Publish the DSN before the record is committed: a crash in between sends it twice
        (at-least-once), never zero times."""
        original = await self.local.content(msg)
        dsn = build_failure_dsn(msg, failures, original, self.settings.hostname)
        await self.bus.publish(topics.INBOUND, dsn.queue_id, dsn.SerializeToString())
        log.info("bounce queued", extra=kv(dsn_queue_id=dsn.queue_id, to=msg.mail_from))

    async def _publish_outcome(self, queue_id: str, r: RecipientResult) -> None:
        event = events_pb2.DeliveryEvent(
            queue_id=queue_id,
            recipient=r.recipient,
            outcome=_OUTCOMES[r.outcome],
            reply_code=r.reply_code,
            status=r.status,
            diagnostic=r.diagnostic,
            at_ms=int(time.time() * 1000),
        )
        try:
            await self.bus.publish(topics.DELIVERY_EVENTS, queue_id, event.SerializeToString())
        except Exception:
            # Tracing only: the delivery itself is done and must not be repeated for this.
            log.exception("could not publish delivery event")
