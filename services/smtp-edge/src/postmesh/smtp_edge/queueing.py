"""Making an accepted message durable: trace headers (Received:, Authentication-Results), claim check, publish on the bus.

The caller answers 250 only if :meth:`MessageQueuer.enqueue` returned (the record is durable)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus import Bus
from postmesh.common.logging import get_logger, kv
from postmesh.smtp_edge import metrics
from postmesh.smtp_edge.backend import EdgeBackend
from postmesh.smtp_edge.received import ClientFacts, received_header

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    address: str
    notify: list[str] = field(default_factory=list)
    orcpt: str = ""


@dataclass(frozen=True, slots=True)
class Envelope:
    queue_id: str
    mail_from: str
    recipients: list[EnvelopeRecipient]
    client: ClientFacts
    body_type: str = ""
    smtputf8: bool = False
    ret: str = ""
    envid: str = ""
    # RFC 8689 REQUIRETLS: carried on the bus so delivery relays only over verified TLS.
    requiretls: bool = False
    # Authentication-Results (MX only), placed under our Received: field.
    auth_header: bytes = b""
    # Local delivery's target mailbox ("" = INBOX; "Junk" for DMARC quarantine).
    mailbox: str = ""


class QueueFailed(Exception):
    """The message is not durable; the client must get a 4xx."""

    def __init__(self, queue_id: str) -> None:
        super().__init__(queue_id)
        self.queue_id = queue_id


@dataclass(frozen=True, slots=True)
class Queued:
    queue_id: str
    size: int
    blob_id: str


class MessageQueuer:
    def __init__(self, bus: Bus, backend: EdgeBackend, hostname: str, inline_limit: int) -> None:
        self.bus = bus
        self.backend = backend
        self.hostname = hostname
        self.inline_limit = inline_limit

    async def enqueue(self, envelope: Envelope, content: bytes) -> Queued:
        """Raises QueueFailed (already logged with the queue id) if the store or bus failed."""
        start = time.perf_counter()
        queue_id = envelope.queue_id
        received_at_ms = time.time_ns() // 1_000_000
        message = (
            received_header(
                client=envelope.client,
                hostname=self.hostname,
                queue_id=queue_id,
                recipients=[r.address for r in envelope.recipients],
                smtputf8=envelope.smtputf8,
            )
            + envelope.auth_header
            + content
        )
        record = events_pb2.InboundMessage(
            queue_id=queue_id,
            mail_from=envelope.mail_from,
            recipients=[
                events_pb2.Recipient(address=r.address, notify=r.notify, orcpt=r.orcpt)
                for r in envelope.recipients
            ],
            size=len(message),
            received_at_ms=received_at_ms,
            client=events_pb2.ClientInfo(
                helo=envelope.client.helo,
                remote_ip=envelope.client.remote_ip,
                authenticated_user=envelope.client.authenticated_user,
                tls=envelope.client.tls is not None,
                listener=envelope.client.listener,
            ),
            envid=envelope.envid,
            ret=envelope.ret,
            body_type=envelope.body_type,
            smtputf8=envelope.smtputf8,
            mailbox=envelope.mailbox,
            requiretls=envelope.requiretls,
        )
        blob_id = ""
        try:
            if len(message) > self.inline_limit:
                # Claim check: the body goes to the store first, the record only names it, so
                # a large message never hits Kafka's request size limit.
                blob_id = await self.backend.put_blob(message)
                record.blob_id = blob_id
            else:
                record.inline_content = message
            await self.bus.publish(topics.INBOUND, queue_id, record.SerializeToString())
        except Exception:
            metrics.REJECTED.labels("temp_failure").inc()
            log.exception(
                "message not queued: store or bus failed",
                extra=kv(queue_id=queue_id, size=len(message), blob_id=blob_id),
            )
            raise QueueFailed(queue_id) from None
        metrics.ACCEPTED.labels(envelope.client.listener).inc()
        metrics.MESSAGE_SIZE.observe(len(message))
        metrics.ACCEPT_LATENCY.observe(time.perf_counter() - start)
        log.info(
            "message queued",
            extra=kv(
                queue_id=queue_id,
                mail_from=envelope.mail_from,
                nrcpt=len(envelope.recipients),
                size=len(message),
                blob_id=blob_id,
                listener=envelope.client.listener,
                user=envelope.client.authenticated_user,
                requiretls=envelope.requiretls,
            ),
        )
        return Queued(queue_id, len(message), blob_id)
