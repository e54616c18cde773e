"""Wires the delivery service: bus consumer -> per-recipient routing -> store (local) or remote
relay; transient remote failures go to the store's deferred queue, whose workers retry them;
failures (and requested success notices) become RFC 3464 reports."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import dns.flags
import grpc
import uvicorn
from prometheus_client import Counter, Histogram

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.auth.v1.auth_pb2_grpc import AuthServiceStub
from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common import topics
from postmesh.common.bus import Bus, BusRecord, create_bus
from postmesh.common.dns import make_resolver
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger, kv, log_context
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.common.shared_calls import SharedCalls
from postmesh.common.store_client.calls import CallStream
from postmesh.common.stubs import auth_stub, queue_stub, store_stub
from postmesh.delivery.admin_api import EmbeddedUvicorn, create_admin_app
from postmesh.delivery.deletes import BatchedDeletes, EntryGone
from postmesh.delivery.dns_memo import AnswerMemo
from postmesh.delivery.dsn import build_dsn, count_received, wants_notice
from postmesh.delivery.forwarding import forwarded
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.mta_sts import MtaSts
from postmesh.delivery.queue import (
    CLAIM_CONTENT_BYTES,
    QueueWorkers,
    group_entries,
    next_delay,
    worker_owner,
)
from postmesh.delivery.queue_admin import QueueAdmin
from postmesh.delivery.relay import Relay
from postmesh.delivery.remote_domains import RemoteDomains
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.signing import DkimSigner
from postmesh.delivery.smtp_client import Envelope, Finish, Rcpt
from postmesh.delivery.trace import TraceIndex

log = get_logger(__name__)
T = TypeVar("T")

DNS_CACHE_ENTRIES = 10_000

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
DEFERRALS = Counter(
    "postmesh_delivery_deferrals_total", "Remote recipients put back in the deferred queue."
)
DELAY_NOTICES = Counter(
    "postmesh_delivery_delay_notices_total",
    "Deferred recipients whose sender was sent a delay notice (RFC 3464 Action: delayed).",
)
BOUNCES = Counter(
    "postmesh_delivery_bounces_total",
    "Recipients that failed, by RFC 3463 status class and subject (e.g. 5.1, 5.4).",
    ["status_class"],
)
RELAY_LATENCY = Histogram(
    "postmesh_delivery_relay_seconds",
    "One remote delivery attempt to one domain (DNS, MTA-STS, connection, transaction).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_OUTCOMES = {
    Outcome.DELIVERED: events_pb2.DeliveryEvent.OUTCOME_DELIVERED,
    Outcome.RELAYED: events_pb2.DeliveryEvent.OUTCOME_RELAYED,
    Outcome.DEFERRED: events_pb2.DeliveryEvent.OUTCOME_DEFERRED,
    Outcome.BOUNCED: events_pb2.DeliveryEvent.OUTCOME_BOUNCED,
    Outcome.QUEUED: events_pb2.DeliveryEvent.OUTCOME_QUEUED,
}


class Signer(Protocol):
    async def sign(self, message: bytes) -> bytes: ...


def make_signer(settings: DeliverySettings, auth: AuthServiceStub) -> Signer | None:
    """DKIM signing (RFC 6376, RFC 8463) of mail leaving the system, keys from auth."""
    if not settings.dkim_signing:
        return None
    return DkimSigner(auth, settings.grpc_deadline_seconds)


def status_class(status: str) -> str:
    """``5.1.10`` -> ``5.1``: bounded label values for the bounce counter."""
    parts = status.split(".")
    return ".".join(parts[:2]) if len(parts) == 3 and all(p.isdigit() for p in parts) else "5.0"


def envelope_of(msg: events_pb2.InboundMessage) -> Envelope:
    return Envelope(
        mail_from=msg.mail_from,
        envid=msg.envid,
        ret=msg.ret.upper(),
        eight_bit=msg.body_type.upper() == "8BITMIME",
        binary=msg.body_type.upper() == "BINARYMIME",
        smtputf8=msg.smtputf8,
        requiretls=msg.requiretls,
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
        security = GrpcSecurity.from_settings(settings)
        self.auth = auth_stub(settings.auth_address, security)
        store = store_stub(settings.store_address, security)
        self.local = LocalDelivery(
            store,
            settings.grpc_deadline_seconds,
            CallStream(store.Calls) if settings.delivery_store_call_stream else None,
        )
        self.queue: queue_pb2_grpc.DeliveryQueueServiceStub = queue_stub(
            settings.store_address, security
        )
        # MX, A/AAAA and MTA-STS TXT answers are cached for their TTL, as a local caching
        # resolver would: no look-ups per message to the same destination.
        plain = make_resolver(settings.dns_servers, cache_entries=DNS_CACHE_ENTRIES)
        if settings.dane:
            # RFC 6840 §5.7: the AD bit in a query asks a validating resolver to say whether
            # its answer was validated, without the DNSSEC records themselves (DO).
            plain.flags = dns.flags.RD | dns.flags.AD
        resolver = AnswerMemo(plain, DNS_CACHE_ENTRIES)
        ca = str(settings.relay_ca_file) if settings.relay_ca_file else None
        mta_sts = MtaSts(resolver, settings.mta_sts_https_port, ca) if settings.mta_sts else None
        self.relay = Relay(settings, resolver, mta_sts)
        self.signer = make_signer(settings, self.auth)
        self.remote_domains = RemoteDomains(settings.remote_domain_cache_seconds)
        # Records handled at once that name the same recipient (a burst to one mailbox) ask
        # auth once between them (ADR 59): ~0.5 ms of auth's CPU and ~0.3 ms of ours a call.
        self.resolve_recipient: SharedCalls[str, auth_pb2.ResolveRecipientResponse] = SharedCalls(
            self._resolve_recipient
        )
        self.steps = settings.retry_steps
        self.lifetime_ms = int(settings.queue_lifetime_seconds * 1000)
        self.delay_warning_ms = int(settings.delivery_delay_warning_seconds * 1000)
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
        self.deletes = BatchedDeletes(self.queue, settings.grpc_deadline_seconds)
        self.trace = TraceIndex(settings.trace_max_messages)
        self.admin = QueueAdmin(
            self.queue,
            owner=self.workers.owner,
            lease_seconds=settings.queue_lease_seconds,
            deadline=settings.grpc_deadline_seconds,
            run_now=self.workers.run_now,
            remove=self.remove,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._http: EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

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
            # No consumer group: every replica reads every event, so any one can trace.
            asyncio.create_task(
                self.bus.consume([topics.DELIVERY_EVENTS], None, self.trace.handle)
            ),
        ]
        if self.settings.queue_admin_port:
            await self._start_admin_api()

    async def _start_admin_api(self) -> None:
        token = self.settings.admin_token_value()
        config = uvicorn.Config(
            create_admin_app(self.admin, self.trace, token),
            host=self.settings.queue_admin_host,
            port=self.settings.queue_admin_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._http = EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # surfaces a bind error
                raise RuntimeError("queue admin API stopped during start-up")
            await asyncio.sleep(0.02)
        log.info(
            "queue admin api listening",
            extra=kv(host=self.settings.queue_admin_host, port=self.settings.queue_admin_port),
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.relay.cache.close_all()
        await self.local.close()
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
            await self.process(msg, fresh=not record.maybe_seen)
            if msg.received_at_ms:
                LATENCY.observe(max(0.0, time.time() - msg.received_at_ms / 1000))

    async def process(self, msg: events_pb2.InboundMessage, fresh: bool = False) -> None:
        """Local recipients are delivered here; remote ones are handed to the deferred queue,
        due at once, whose workers relay them. So the bus consumer never waits long for a
        remote host (one slow destination blocks nothing but its own queue entries), and the
        record is committed only when every recipient is delivered, bounced or durably queued.
        A store or auth outage raises: the bus retries the record, and local delivery and
        Enqueue are idempotent, so a repeat makes no second copy.

        ``fresh``: the bus says this record was never handled before. Its remote recipients
        are then attempted first, for up to ``relay_first_attempt_seconds``, and queued only
        if that attempt defers them or is not finished by then (ADR 58): the record itself
        keeps the message durable until then, so an attempt that finishes writes nothing to
        the store. A record that may have been handled before goes through the queue first,
        whose Enqueue finds what an earlier handling queued."""
        content: bytes | None = None
        if msg.WhichOneof("content") != "blob_id":
            content = msg.inline_content
        results: list[RecipientResult] = []
        remote: list[events_pb2.Recipient] = []
        loop = content is not None and self._loop_result(content)
        for rcpt in msg.recipients:
            if loop:
                results.append(self._as(loop, rcpt.address))
                continue
            if self.remote_domains.known(rcpt.address):
                remote.append(rcpt)  # auth said this domain is remote moments ago (ADR 44)
                continue
            resolved = await self.resolve_recipient(rcpt.address)
            if resolved.kind == auth_pb2.RECIPIENT_KIND_LOCAL_USER:
                # An alias expands to local users (each delivered once: store.Deliver is
                # idempotent per queue id and user) and remote addresses, relayed as if the
                # client had named them (Postfix virtual_alias_maps forwarding).
                if resolved.users:
                    results.append(
                        await self.local.deliver(msg, rcpt.address, list(resolved.users))
                    )
                remote.extend(forwarded(rcpt, resolved.remote_targets))
            elif resolved.kind == auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL:
                # The user was removed between RCPT TO and delivery (RFC 3463 X.1.1).
                results.append(
                    RecipientResult(rcpt.address, Outcome.BOUNCED, "550", "5.1.1", "user unknown")
                )
            elif resolved.kind == auth_pb2.RECIPIENT_KIND_DISABLED:
                # Disabled between RCPT TO and delivery (RFC 3463 X.2.1).
                results.append(
                    RecipientResult(
                        rcpt.address, Outcome.BOUNCED, "550", "5.2.1", "mailbox disabled"
                    )
                )
            else:
                if resolved.kind == auth_pb2.RECIPIENT_KIND_REMOTE:
                    self.remote_domains.remember(rcpt.address)
                remote.append(rcpt)
        # Last: once an attempt has begun nothing may raise (the bus would repeat the record,
        # and the remote host may have the message already).
        if remote and not (fresh and await self._relay_first(msg, remote, content)):
            await self._enqueue_remote(msg, remote, content)
        await self._report(msg, results, attempt=1, content=content)

    async def _resolve_recipient(self, address: str) -> auth_pb2.ResolveRecipientResponse:
        return await self.auth.ResolveRecipient(  # type: ignore[no-any-return]
            auth_pb2.ResolveRecipientRequest(address=address),
            timeout=self.settings.grpc_deadline_seconds,
        )

    async def _relay_first(
        self,
        msg: events_pb2.InboundMessage,
        remote: list[events_pb2.Recipient],
        content: bytes | None,
    ) -> bool:
        """The first attempt before any queue entry (ADR 58), one per domain, in worker slots
        reserved here; False (nothing done) when it is off, the content is a blob (stored
        already) or the workers are full. A group whose attempt finishes within the wait is
        reported, and only its deferred recipients are queued (with their next attempt's
        time); a group still under way then is queued born leased to this replica and its
        attempt goes on as a queue worker's. Never raises once an attempt has begun: every
        store call after that waits for the store to come back (as after any attempt)."""
        wait = self.settings.relay_first_attempt_seconds
        if wait <= 0 or content is None or not self.workers.reserve(len(remote)):
            return False
        groups: dict[str, list[events_pb2.Recipient]] = {}
        for rcpt in remote:
            groups.setdefault(domain_of(rcpt.address), []).append(rcpt)
        attempts = {
            domain: asyncio.create_task(self._relay(msg, content, domain, rcpts, "first"))
            for domain, rcpts in groups.items()
        }
        try:
            await asyncio.wait(attempts.values(), timeout=wait)
        except asyncio.CancelledError:
            for task in attempts.values():
                task.cancel()
            self.workers.release(len(remote))
            raise
        for domain, task in attempts.items():
            rcpts = groups[domain]
            if task.done():
                try:
                    await self._first_done(msg, content, rcpts, await self._results(task, rcpts))
                finally:
                    self.workers.release(len(rcpts))
            else:
                await self._first_to_queue(msg, content, rcpts, task)
        return True

    @staticmethod
    async def _results(
        task: asyncio.Task[list[RecipientResult]], rcpts: Sequence[events_pb2.Recipient]
    ) -> list[RecipientResult]:
        """The attempt's results; one that failed unexpectedly defers its recipients (the
        remote host may or may not have the message, as after a lost connection)."""
        try:
            return await task
        except Exception as e:
            log.exception("first relay attempt failed", extra=kv(recipients=len(rcpts)))
            return [
                RecipientResult(r.address, Outcome.DEFERRED, "451", "4.3.0", f"attempt failed: {e}")
                for r in rcpts
            ]

    async def _first_done(
        self,
        msg: events_pb2.InboundMessage,
        content: bytes,
        rcpts: Sequence[events_pb2.Recipient],
        results: list[RecipientResult],
    ) -> None:
        """A first attempt finished before anything was queued: its outcomes are reported,
        and a deferred recipient becomes a queue entry due at its next attempt's time."""
        now_ms = int(time.time() * 1000)
        next_at = {
            r.recipient: now_ms + int(next_delay(self.steps, 1) * 1000)
            for r in results
            if r.outcome is Outcome.DEFERRED
        }
        await self._report(
            msg, results, attempt=1, content=content, next_at=next_at, recipients=rcpts
        )
        by_addr = {r.address: r for r in rcpts}
        for r in results:
            if r.outcome is not Outcome.DEFERRED:
                continue
            DEFERRALS.inc()
            req = queue_pb2.EnqueueRequest(
                queue_id=msg.queue_id, recipient=by_addr[r.recipient], message=msg, attempts=1,
                next_attempt_at_ms=next_at[r.recipient],
                last_error=f"{r.reply_code} {r.status} {r.diagnostic}",
            )  # fmt: skip
            await self._until_done(
                "queueing a deferred recipient",
                functools.partial(
                    self.queue.Enqueue, req, timeout=self.settings.grpc_deadline_seconds
                ),
            )

    async def _first_to_queue(
        self,
        msg: events_pb2.InboundMessage,
        content: bytes,
        rcpts: Sequence[events_pb2.Recipient],
        task: asyncio.Task[list[RecipientResult]],
    ) -> None:
        """A first attempt still under way after the wait: its recipients are queued with the
        content, leased to this replica, before the record may be committed; the attempt then
        finishes as a queue worker's (report, delete or reschedule)."""
        entries: list[queue_pb2.QueueEntry] = []
        for rcpt in rcpts:
            req = queue_pb2.EnqueueRequest(
                queue_id=msg.queue_id, recipient=rcpt, message=msg, attempts=0,
                lease_owner=self.workers.owner, lease_seconds=self.settings.queue_lease_seconds,
            )  # fmt: skip
            resp = await self._until_done(
                "queueing an attempt under way",
                functools.partial(
                    self.queue.Enqueue, req, timeout=self.settings.grpc_deadline_seconds
                ),
            )
            if resp is None:
                continue
            if resp.entry.lease_owner != self.workers.owner:
                # A store that ignores the lease: the claim loop may attempt it as well.
                log.warning("queued attempt not leased to us", extra=kv(rcpt=rcpt.address))
            entries.append(resp.entry)
            queued = RecipientResult(rcpt.address, Outcome.QUEUED, "", "", "queued for relay")
            await self._publish_outcome(msg, queued, 0, 0)
        log.info("first attempt outlasted its wait; queued", extra=kv(recipients=len(rcpts)))
        self.workers.release(len(rcpts) - len(entries))
        if not entries:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return

        async def finish() -> None:
            results = await self._results(task, rcpts)
            mine = {e.recipient.address for e in entries}
            await self._conclude(
                entries, msg, [r for r in results if r.recipient in mine], 1, content
            )

        self.workers.adopt(entries, finish())

    async def _enqueue_remote(
        self,
        msg: events_pb2.InboundMessage,
        remote: list[events_pb2.Recipient],
        content: bytes | None,
    ) -> None:
        """Every remote recipient becomes a queue entry before the record is committed. When
        this replica's workers have room, the entries are born leased to them and attempted at
        once with the content at hand (no ClaimDue, no GetBlob): as durable as a claimed entry,
        so a crash now means another replica retries them when the lease runs out (ADR 15).
        A duplicate (the bus repeating a record) is never attempted here: it is someone's
        already, or unleased and due for the claim loop."""
        leased = self.workers.reserve(len(remote))
        born: list[queue_pb2.QueueEntry] = []
        try:
            for rcpt in remote:
                req = queue_pb2.EnqueueRequest(
                    queue_id=msg.queue_id, recipient=rcpt, message=msg, attempts=0
                )
                if leased:
                    req.lease_owner = self.workers.owner
                    req.lease_seconds = self.settings.queue_lease_seconds
                    if content is None:  # a blob: the store's answer brings it along
                        req.content_max_bytes = CLAIM_CONTENT_BYTES
                resp = await self.queue.Enqueue(req, timeout=self.settings.grpc_deadline_seconds)
                if resp.content and content is None:
                    content = resp.content
                # Only what the store says is ours: a store older than lease_owner ignores it
                # and returns a free entry, which the claim loop (of any replica) takes.
                if leased and not resp.duplicate and resp.entry.lease_owner == req.lease_owner:
                    born.append(resp.entry)
            log.info("queued for relay", extra=kv(recipients=len(remote), leased=len(born)))
            for rcpt in remote:
                queued = RecipientResult(rcpt.address, Outcome.QUEUED, "", "", "queued for relay")
                await self._publish_outcome(msg, queued, 0, 0)
        finally:
            # Also when an Enqueue failed (the bus retries the record): what is leased to us
            # is attempted now rather than after the lease.
            if leased:
                self.workers.run_now(born, content, reserved=True)
                self.workers.release(len(remote) - len(born))
            if len(born) < len(remote):
                self.workers.wake()

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

    async def _until_done(self, what: str, op: Callable[[], Awaitable[T]]) -> T | None:
        """A store or bus outage after a remote host already took the message must not lead
        to a second attempt (a second remote copy): wait for it to come back. None when the
        store says the lease is no longer ours (it expired and another replica took the
        entry, or an operator deleted it): that replica decides now."""
        delay = 0.5
        while True:
            try:
                return await op()
            except EntryGone as e:
                log.warning(f"{what}: entry no longer ours", extra=kv(detail=str(e)))
                return None
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    log.warning(f"{what}: entry no longer ours", extra=kv(detail=e.details()))
                    return None
                log.warning(f"{what} failed; retrying", extra=kv(error=str(e), retry_in=delay))
            except (OSError, ConnectionError) as e:
                log.warning(f"{what} failed; retrying", extra=kv(error=str(e), retry_in=delay))
            if self._stopping.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # ----- attempts, from the deferred queue -----

    @staticmethod
    def _message_of(entries: Sequence[queue_pb2.QueueEntry]) -> events_pb2.InboundMessage:
        msg = events_pb2.InboundMessage()
        msg.CopyFrom(entries[0].message)
        del msg.recipients[:]
        msg.recipients.extend([e.recipient for e in entries])
        return msg

    async def remove(self, entries: Sequence[queue_pb2.QueueEntry], bounce: bool) -> None:
        """An operator's delete of entries leased to this replica (postsuper -d); with
        ``bounce`` the sender gets a failure report first (unless NOTIFY or <> forbid it)."""
        for group in group_entries(entries):
            msg = self._message_of(group)
            results = [
                RecipientResult(
                    e.recipient.address, Outcome.BOUNCED, "550", "5.0.0",
                    f"deleted from the queue by the administrator; last error: {e.last_error}",
                )
                for e in group
            ]  # fmt: skip
            attempt = max(e.attempts for e in group)
            await self._report(msg, results, attempt, content=None, notices_allowed=bounce)
            for e in group:
                await self._delete_entry(e)

    async def _delete_entry(self, entry: queue_pb2.QueueEntry) -> None:
        req = queue_pb2.DeleteQueueEntryRequest(
            queue_id=entry.queue_id, recipient=entry.recipient.address, owner=self.workers.owner
        )
        # Batched with the deletes of every other attempt finishing now (one DeleteMany).
        await self._until_done("delete", functools.partial(self.deletes.delete, req))

    async def retry(
        self, entries: Sequence[queue_pb2.QueueEntry], known: bytes | None = None
    ) -> None:
        """One group of due entries (one message, one domain), leased to this replica;
        ``known``: the content when the caller has it (the first attempt from the bus)."""
        msg = self._message_of(entries)
        attempt = max(e.attempts for e in entries) + 1
        content = known if known is not None else await self.local.content(msg)
        domain = domain_of(entries[0].recipient.address)
        loop = self._loop_result(content) if content else None
        if not content:
            results = [
                RecipientResult(
                    e.recipient.address, Outcome.BOUNCED, "554", "5.3.0",
                    "message content no longer available",
                )
                for e in entries
            ]  # fmt: skip
        elif loop:
            results = [self._as(loop, e.recipient.address) for e in entries]
        else:
            source = "first" if attempt == 1 else "retry"
            results = await self._relay(msg, content, domain, list(msg.recipients), source)
        await self._conclude(entries, msg, results, attempt, content)

    async def _conclude(
        self,
        entries: Sequence[queue_pb2.QueueEntry],
        msg: events_pb2.InboundMessage,
        results: Sequence[RecipientResult],
        attempt: int,
        content: bytes | None,
    ) -> None:
        """An attempt's end for its queue entries: reported, then each entry deleted or
        rescheduled (a recipient deferred past the queue lifetime fails with its last
        deferral's status)."""
        now_ms = int(time.time() * 1000)
        by_addr = {e.recipient.address: e for e in entries}
        final: list[RecipientResult] = []
        for r in results:
            entry = by_addr[r.recipient]
            if r.outcome is Outcome.DEFERRED and now_ms - entry.created_at_ms >= self.lifetime_ms:
                # Given up: Action failed with the last deferral's 4.X.X status, a "persistent
                # transient failure" that "caused abandonment" (RFC 3463 §3.1; X.4.7 is "useful
                # only as a persistent transient error", so never 5.4.7), with its Remote-MTA
                # and reply, as Postfix's bounce of expired mail.
                r = RecipientResult(
                    r.recipient, Outcome.BOUNCED, r.reply_code, r.status,
                    f"delivery time expired; last error: {r.diagnostic}",
                    r.remote_mta, r.remote_reply,
                )  # fmt: skip
            final.append(r)
        # The report goes out before the entries are deleted: a crash in between sends the
        # same report again under the same id, which the store deduplicates.
        next_at = {
            r.recipient: now_ms + int(next_delay(self.steps, attempt) * 1000)
            for r in final
            if r.outcome is Outcome.DEFERRED
        }
        await self._report(
            msg,
            final,
            attempt=attempt,
            content=content,
            next_at=next_at,
            recipients=[e.recipient for e in entries],
        )
        # So is a delay notice before its Reschedule records it: at least once, as reports.
        notified = await self._notify_delay(msg, entries, final, content, now_ms)
        for r in final:
            entry = by_addr[r.recipient]
            if r.outcome is Outcome.DEFERRED:
                DEFERRALS.inc()
                req = queue_pb2.RescheduleRequest(
                    queue_id=entry.queue_id,
                    recipient=r.recipient,
                    owner=self.workers.owner,
                    next_attempt_at_ms=next_at[r.recipient],
                    last_error=f"{r.reply_code} {r.status} {r.diagnostic}",
                    delay_notified_at_ms=now_ms if r.recipient in notified else 0,
                )
                after = await self._until_done(
                    "reschedule",
                    functools.partial(
                        self.queue.Reschedule, req, timeout=self.settings.grpc_deadline_seconds
                    ),
                )
                if req.delay_notified_at_ms and after and not after.delay_notified_at_ms:
                    # A store from before delay notices: the next retry would notify again.
                    log.warning("store did not record the delay notice; upgrade the store")
            else:
                await self._delete_entry(entry)

    def _overdue(self, entry: queue_pb2.QueueEntry, r: RecipientResult, now_ms: int) -> bool:
        """Deferred again, queued longer than the delay warning time, and not yet notified
        (by any replica: the entry keeps it)."""
        return (
            r.outcome is Outcome.DEFERRED
            and self.delay_warning_ms > 0
            and not entry.delay_notified_at_ms
            and now_ms - entry.created_at_ms >= self.delay_warning_ms
        )

    async def _notify_delay(
        self,
        msg: events_pb2.InboundMessage,
        entries: Sequence[queue_pb2.QueueEntry],
        results: Sequence[RecipientResult],
        content: bytes | None,
        now_ms: int,
    ) -> set[str]:
        """RFC 3461 §4.1 NOTIFY=DELAY: one report (RFC 3464 Action: delayed) about the
        recipients of this attempt that are overdue and whose NOTIFY asks for it (DELAY, or
        no NOTIFY: dsn.DEFAULT_NOTIFY; never to <>, so never about a report), with the last
        reply, and the end of the queue lifetime as Will-Retry-Until. Its id does not depend
        on the attempt, so one sent again after a crash is the same message. Returns the
        recipients it was about, for their Reschedule to record."""
        by_addr = {e.recipient.address: e for e in entries}
        due = [
            r
            for r in results
            if self._overdue(by_addr[r.recipient], r, now_ms)
            and wants_notice(msg, by_addr[r.recipient].recipient, Outcome.DEFERRED)
        ]
        if not due:
            return set()
        rcpts = [by_addr[r.recipient].recipient for r in due]
        until = {r.recipient: by_addr[r.recipient].created_at_ms + self.lifetime_ms for r in due}
        await self._publish_report(msg, due, content, 0, rcpts, until)
        DELAY_NOTICES.inc(len(due))
        return {r.recipient for r in due}

    async def _relay(
        self,
        msg: events_pb2.InboundMessage,
        content: bytes,
        domain: str,
        rcpts: list[events_pb2.Recipient],
        source: str,
    ) -> list[RecipientResult]:
        started = time.monotonic()
        out = await self.relay.deliver(
            domain,
            envelope_of(msg),
            [rcpt_of(r) for r in rcpts],
            content,
            finish=self._signing() if self.signer is not None else None,
        )
        RELAY_LATENCY.observe(time.monotonic() - started)
        for r in out:
            ATTEMPTS.labels(r.outcome.value, source).inc()
        return out

    def _signing(self) -> Finish:
        """DKIM signing of the octets a session is about to send: after any BINARYMIME
        conversion for that peer (ADR 40), each distinct form signed once per attempt."""
        signer = self.signer
        assert signer is not None
        signed: dict[bytes, bytes] = {}

        async def finish(content: bytes) -> bytes:
            if content not in signed:
                signed[content] = await signer.sign(content)
            return signed[content]

        return finish

    # ----- outcomes: events and reports -----

    async def _report(
        self,
        msg: events_pb2.InboundMessage,
        results: Sequence[RecipientResult],
        attempt: int,
        content: bytes | None,
        next_at: dict[str, int] | None = None,
        notices_allowed: bool = True,
        recipients: Sequence[events_pb2.Recipient] = (),
    ) -> None:
        """``recipients``: the envelope recipients the results are about when they are not
        the message's own, as an alias's forward targets (made by delivery, with the alias's
        NOTIFY and ORCPT, RFC 3461 §6.2.7.3): their DSN parameters decide the reports."""
        rcpts = {r.address: r for r in msg.recipients}
        rcpts.update((r.address, r) for r in recipients)
        notices: dict[Outcome, list[RecipientResult]] = {}
        for result in results:
            RECIPIENTS.labels(result.outcome.value).inc()
            if result.outcome is Outcome.BOUNCED:
                BOUNCES.labels(status_class(result.status)).inc()
            log.info(
                "recipient deferred" if result.outcome is Outcome.DEFERRED else "recipient done",
                extra=kv(
                    rcpt=result.recipient, outcome=result.outcome.value, status=result.status,
                    reply=f"{result.reply_code} {result.diagnostic}",
                    remote_mta=result.remote_mta, attempt=attempt, requiretls=msg.requiretls,
                ),
            )  # fmt: skip
            nxt = (next_at or {}).get(result.recipient, 0)
            await self._publish_outcome(msg, result, attempt, nxt)
            rcpt = rcpts.get(result.recipient, events_pb2.Recipient(address=result.recipient))
            # Delay notices go out once per queued recipient (_notify_delay), not per deferral;
            # success notices for local delivery, and for relaying to a peer without DSN
            # (§5.2.3; a peer with DSN got NOTIFY and reports on its own).
            reportable = result.outcome in (Outcome.BOUNCED, Outcome.DELIVERED) or (
                result.outcome is Outcome.RELAYED and result.relayed_without_dsn
            )
            if notices_allowed and reportable and wants_notice(msg, rcpt, result.outcome):
                notices.setdefault(result.outcome, []).append(result)
        for group in notices.values():
            about = [rcpts[r.recipient] for r in group if r.recipient in rcpts]
            content = await self._publish_report(msg, group, content, attempt, about)

    async def _publish_report(
        self,
        msg: events_pb2.InboundMessage,
        group: Sequence[RecipientResult],
        content: bytes | None,
        attempt: int,
        recipients: Sequence[events_pb2.Recipient],
        retry_until_ms: dict[str, int] | None = None,
    ) -> bytes:
        """Build the report on ``group`` and publish it for delivery to the sender. Returns
        the original's content, read from the store when ``content`` is None."""
        if content is None:
            content = await self.local.content(msg)
        dsn = build_dsn(
            msg,
            group,
            content,
            self.settings.hostname,
            attempt,
            recipients=recipients,
            retry_until_ms=retry_until_ms,
        )
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
        return content

    async def _publish_outcome(
        self,
        msg: events_pb2.InboundMessage,
        r: RecipientResult,
        attempt: int,
        next_attempt_at_ms: int,
    ) -> None:
        queue_id = msg.queue_id
        event = events_pb2.DeliveryEvent(
            mail_from=msg.mail_from,
            received_at_ms=msg.received_at_ms,
            queue_id=queue_id,
            recipient=r.recipient,
            outcome=_OUTCOMES[r.outcome],
            reply_code=r.reply_code,
            status=r.status,
            diagnostic=r.diagnostic,
            at_ms=int(time.time() * 1000),
            attempt=attempt,
            remote_mta=r.remote_mta,
            next_attempt_at_ms=next_attempt_at_ms,
            requiretls=msg.requiretls,
        )
        try:
            await self.bus.publish(topics.DELIVERY_EVENTS, queue_id, event.SerializeToString())
        except Exception:
            # Tracing only: the delivery itself is done and must not be repeated for this.
            log.exception("could not publish delivery event")
