"""Wires the delivery service: bus consumer -> per-recipient routing -> store (local) or remote
relay; transient remote failures go to the store's deferred queue, whose workers retry them;
failures (and requested success notices) become RFC 3464 reports."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import grpc
from prometheus_client import Counter, Histogram

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.auth.v1.auth_pb2_grpc import AuthServiceStub
from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common import topics
from postmesh.common.bus import Bus, BusRecord, create_bus
from postmesh.common.dns import make_resolver
from postmesh.common.grpc import channel
from postmesh.common.logging import get_logger, kv, log_context
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.common.stubs import auth_stub, store_stub
from postmesh.delivery.dsn import build_dsn, count_received, wants_notice
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.mta_sts import MtaSts
from postmesh.delivery.queue import QueueWorkers, next_delay, worker_owner
from postmesh.delivery.relay import Relay
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.signing import DkimSigner
from postmesh.delivery.smtp_client import Envelope, Rcpt

log = get_logger(__name__)
T = TypeVar("T")

RECIPIENTS = Counter(
    "postmesh_delivery_recipients_total", "Recipients handled, by outcome.", ["outcome"]
)
ATTEMPTS = Counter(
    "postmesh_delivery_remote_attempts_total",
    "Remote delivery attempts per recipient, by outcome and by first try or queue retry.",
    ["outcome", "source"],
)
LATENCY = Histogram(
    "postmesh_delivery_latency_seconds",
    "From acceptance at the SMTP edge to the end of delivery, per message.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RELAY_LATENCY = Histogram(
    "postmesh_delivery_relay_seconds",
    "One remote delivery attempt to one domain (DNS, connection, transaction).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_OUTCOMES = {
    Outcome.DELIVERED: events_pb2.DeliveryEvent.OUTCOME_DELIVERED,
    Outcome.RELAYED: events_pb2.DeliveryEvent.OUTCOME_RELAYED,
    Outcome.DEFERRED: events_pb2.DeliveryEvent.OUTCOME_DEFERRED,
    Outcome.BOUNCED: events_pb2.DeliveryEvent.OUTCOME_BOUNCED,
}


class Signer(Protocol):
    async def sign(self, message: bytes) -> bytes: ...


def make_signer(settings: DeliverySettings, auth: AuthServiceStub) -> Signer | None:
    """DKIM signing (RFC 6376, RFC 8463) of mail leaving the system, keys from auth."""
    if not settings.dkim_signing:
        return None
    return DkimSigner(auth, settings.grpc_deadline_seconds)


def envelope_of(msg: events_pb2.InboundMessage) -> Envelope:
    return Envelope(
        mail_from=msg.mail_from,
        envid=msg.envid,
        ret=msg.ret.upper(),
        eight_bit=msg.body_type.upper() == "8BITMIME",
        smtputf8=msg.smtputf8,
    )


def rcpt_of(r: events_pb2.Recipient) -> Rcpt:
    return Rcpt(r.address, tuple(n.upper() for n in r.notify), r.orcpt)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class DeliveryService(Service):
    name = "delivery"

    def __init__(self, settings: DeliverySettings, bus: Bus | None = None) -> None:
        self.settings = settings
        self.bus = bus or create_bus(settings, "delivery")
        self.auth = auth_stub(settings.auth_address)
        self.local = LocalDelivery(
            store_stub(settings.store_address), settings.grpc_deadline_seconds
        )
        self.queue: queue_pb2_grpc.DeliveryQueueServiceStub = (
            queue_pb2_grpc.DeliveryQueueServiceStub(channel(settings.store_address))
        )
        resolver = make_resolver(settings.dns_servers)
        ca = str(settings.relay_ca_file) if settings.relay_ca_file else None
        mta_sts = MtaSts(resolver, settings.mta_sts_https_port, ca) if settings.mta_sts else None
        self.relay = Relay(settings, resolver, mta_sts)
        self.signer = make_signer(settings, self.auth)
        self.steps = settings.retry_steps
        self.lifetime_ms = int(settings.queue_lifetime_seconds * 1000)
        self.workers = QueueWorkers(
            self.queue,
            self.retry,
            owner=worker_owner(),
            concurrency=settings.queue_concurrency,
            claim_batch=settings.queue_claim_batch,
            lease_seconds=settings.queue_lease_seconds,
            poll_seconds=settings.queue_poll_seconds,
            deadline=settings.grpc_deadline_seconds,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.bus.start()
        self._tasks = [
            asyncio.create_task(
                self.bus.consume(
                    [topics.INBOUND],
                    self.settings.delivery_group,
                    self.handle,
                    concurrency=self.settings.delivery_concurrency,
                )
            ),
            asyncio.create_task(self.workers.run()),
            asyncio.create_task(self._sweep_connections()),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.relay.cache.close_all()
        await self.bus.stop()

    async def _sweep_connections(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.settings.relay_connection_idle_seconds))
            await self.relay.cache.sweep()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"bus": self.bus.ready}

    # ----- first attempt, from the bus -----

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
            await self.process(msg)
            if msg.received_at_ms:
                LATENCY.observe(max(0.0, time.time() - msg.received_at_ms / 1000))

    async def process(self, msg: events_pb2.InboundMessage) -> None:
        """Every recipient ends delivered, relayed, bounced or in the deferred queue before this
        returns (and the bus commits the record). Order matters for at-least-once: what can
        raise and make the bus redeliver (auth, local store) runs before anything is sent to
        a remote host, so a redelivery repeats as little remote traffic as possible."""
        content: bytes | None = None
        if msg.WhichOneof("content") != "blob_id":
            content = msg.inline_content
        results: list[RecipientResult] = []
        remote: dict[str, list[events_pb2.Recipient]] = {}
        loop = content is not None and self._loop_result(content)
        for rcpt in msg.recipients:
            if loop:
                results.append(self._as(loop, rcpt.address))
                continue
            resolved = await self.auth.ResolveRecipient(
                auth_pb2.ResolveRecipientRequest(address=rcpt.address),
                timeout=self.settings.grpc_deadline_seconds,
            )
            if resolved.kind == auth_pb2.RECIPIENT_KIND_LOCAL_USER:
                results.append(await self.local.deliver(msg, rcpt.address, list(resolved.users)))
            elif resolved.kind == auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL:
                # The user was removed between RCPT TO and delivery (RFC 3463 X.1.1).
                results.append(
                    RecipientResult(rcpt.address, Outcome.BOUNCED, "550", "5.1.1", "user unknown")
                )
            else:
                remote.setdefault(domain_of(rcpt.address), []).append(rcpt)
        if remote:
            if content is None:
                content = await self.local.content(msg)
            loop = self._loop_result(content)
            if loop:
                results += [self._as(loop, r.address) for rs in remote.values() for r in rs]
            else:
                results += await self._relay_all(msg, content, remote, "first")
        deferred = [r for r in results if r.outcome is Outcome.DEFERRED]
        if deferred:
            by_addr = {r.address: r for r in msg.recipients}
            now_ms = int(time.time() * 1000)
            for r in deferred:
                await self._until_done(
                    "enqueue",
                    functools.partial(self._enqueue, msg, by_addr[r.recipient], r, now_ms),
                )
            self.workers.wake()
        await self._report(msg, results, attempt=1, content=content)

    def _loop_result(self, content: bytes) -> RecipientResult | None:
        hops = count_received(content)
        if hops <= self.settings.max_received_headers:
            return None
        # RFC 5321 §6.3: a loop is detected by counting Received: fields.
        return RecipientResult(
            "", Outcome.BOUNCED, "554", "5.4.6", f"mail forwarding loop ({hops} Received headers)"
        )

    @staticmethod
    def _as(template: RecipientResult, address: str) -> RecipientResult:
        return RecipientResult(
            address, template.outcome, template.reply_code, template.status, template.diagnostic
        )

    async def _relay_all(
        self,
        msg: events_pb2.InboundMessage,
        content: bytes,
        remote: dict[str, list[events_pb2.Recipient]],
        source: str,
    ) -> list[RecipientResult]:
        if self.signer is not None:
            content = await self.signer.sign(content)  # once per message, for every domain
        envelope = envelope_of(msg)

        async def one(domain: str, rcpts: list[events_pb2.Recipient]) -> list[RecipientResult]:
            with RELAY_LATENCY.time():
                out = await self.relay.deliver(
                    domain, envelope, [rcpt_of(r) for r in rcpts], content
                )
            for r in out:
                ATTEMPTS.labels(r.outcome.value, source).inc()
            return out

        groups = await asyncio.gather(*(one(d, rs) for d, rs in remote.items()))
        return [r for g in groups for r in g]

    async def _enqueue(
        self,
        msg: events_pb2.InboundMessage,
        rcpt: events_pb2.Recipient,
        result: RecipientResult,
        now_ms: int,
    ) -> None:
        await self.queue.Enqueue(
            queue_pb2.EnqueueRequest(
                queue_id=msg.queue_id,
                recipient=rcpt,
                message=msg,
                attempts=1,
                next_attempt_at_ms=now_ms + int(next_delay(self.steps, 1) * 1000),
                last_error=f"{result.reply_code} {result.status} {result.diagnostic}",
            ),
            timeout=self.settings.grpc_deadline_seconds,
        )

    async def _until_done(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """A store or bus outage after a remote host already took the message must not make
        the bus redeliver the record (a second remote copy): wait for it to come back."""
        delay = 0.5
        while True:
            try:
                return await op()
            except (grpc.aio.AioRpcError, OSError, ConnectionError) as e:
                log.warning(f"{what} failed; retrying", extra=kv(error=str(e), retry_in=delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # ----- later attempts, from the deferred queue -----

    async def retry(self, entries: Sequence[queue_pb2.QueueEntry]) -> None:
        """One group of due entries (one message, one domain), leased to this replica."""
        msg = events_pb2.InboundMessage()
        msg.CopyFrom(entries[0].message)
        del msg.recipients[:]
        msg.recipients.extend([e.recipient for e in entries])
        attempt = max(e.attempts for e in entries) + 1
        content = await self.local.content(msg)
        if not content:
            results = [
                RecipientResult(
                    e.recipient.address, Outcome.BOUNCED, "554", "5.3.0",
                    "message content no longer available",
                )
                for e in entries
            ]  # fmt: skip
        else:
            domain = domain_of(entries[0].recipient.address)
            results = await self._relay_all(msg, content, {domain: list(msg.recipients)}, "queue")
        now_ms = int(time.time() * 1000)
        by_addr = {e.recipient.address: e for e in entries}
        final: list[RecipientResult] = []
        for r in results:
            entry = by_addr[r.recipient]
            if r.outcome is Outcome.DEFERRED and now_ms - entry.created_at_ms >= self.lifetime_ms:
                # RFC 3463 X.4.7: delivery time expired; the last reply says why.
                r = RecipientResult(
                    r.recipient, Outcome.BOUNCED, r.reply_code, "5.4.7",
                    f"delivery time expired; last error: {r.reply_code} {r.status} {r.diagnostic}",
                    r.remote_mta,
                )  # fmt: skip
            final.append(r)
        # The report goes out before the entries are deleted: a crash in between sends the
        # same report again under the same id, which the store deduplicates.
        await self._report(msg, final, attempt=attempt, content=content)
        for r in final:
            entry = by_addr[r.recipient]
            if r.outcome is Outcome.DEFERRED:
                delay = next_delay(self.steps, attempt)
                await self.queue.Reschedule(
                    queue_pb2.RescheduleRequest(
                        queue_id=entry.queue_id,
                        recipient=r.recipient,
                        owner=self.workers.owner,
                        next_attempt_at_ms=now_ms + int(delay * 1000),
                        last_error=f"{r.reply_code} {r.status} {r.diagnostic}",
                    ),
                    timeout=self.settings.grpc_deadline_seconds,
                )
            else:
                await self.queue.Delete(
                    queue_pb2.DeleteQueueEntryRequest(
                        queue_id=entry.queue_id, recipient=r.recipient, owner=self.workers.owner
                    ),
                    timeout=self.settings.grpc_deadline_seconds,
                )

    # ----- outcomes: events and reports -----

    async def _report(
        self,
        msg: events_pb2.InboundMessage,
        results: Sequence[RecipientResult],
        attempt: int,
        content: bytes | None,
    ) -> None:
        rcpts = {r.address: r for r in msg.recipients}
        notices: dict[Outcome, list[RecipientResult]] = {}
        for result in results:
            RECIPIENTS.labels(result.outcome.value).inc()
            log.info(
                "recipient done" if result.outcome is not Outcome.DEFERRED else "recipient deferred",
                extra=kv(
                    rcpt=result.recipient, outcome=result.outcome.value, status=result.status,
                    diagnostic=result.diagnostic, remote_mta=result.remote_mta, attempt=attempt,
                ),
            )  # fmt: skip
            await self._publish_outcome(msg.queue_id, result)
            rcpt = rcpts.get(result.recipient, events_pb2.Recipient(address=result.recipient))
            # Delay notices are optional (RFC 3461 §4.1) and not sent; success notices only for
            # local delivery (a relaying peer with DSN support reports on its own).
            if result.outcome in (Outcome.BOUNCED, Outcome.DELIVERED) and wants_notice(
                msg, rcpt, result.outcome
            ):
                notices.setdefault(result.outcome, []).append(result)
        for group in notices.values():
            if content is None:
                content = await self.local.content(msg)
            dsn = build_dsn(msg, group, content, self.settings.hostname, attempt)
            await self._until_done(
                "publishing a report",
                functools.partial(
                    self.bus.publish, topics.INBOUND, dsn.queue_id, dsn.SerializeToString()
                ),
            )
            log.info(
                "report queued",
                extra=kv(dsn_queue_id=dsn.queue_id, to=msg.mail_from,
                         action=group[0].outcome.value, recipients=len(group)),
            )  # fmt: skip

    async def _publish_outcome(self, queue_id: str, r: RecipientResult) -> None:
        event = events_pb2.DeliveryEvent(
            queue_id=queue_id,
            recipient=r.recipient,
            outcome=_OUTCOMES[r.outcome],
            reply_code=r.reply_code,
            status=r.status,
            diagnostic=(f"{r.remote_mta}: " if r.remote_mta else "") + r.diagnostic,
            at_ms=int(time.time() * 1000),
        )
        try:
            await self.bus.publish(topics.DELIVERY_EVENTS, queue_id, event.SerializeToString())
        except Exception:
            # Tracing only: the delivery itself is done and must not be repeated for this.
            log.exception("could not publish delivery event")
