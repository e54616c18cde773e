from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2, store_pb2
from postmesh.common import topics
from postmesh.common.bus import BusRecord
from postmesh.common.bus.sqlite import SqliteBus
from postmesh.delivery.app import DeliveryService
from postmesh.delivery.dsn import wants_failure_notice
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import Envelope, Finish, Rcpt

ORIGINAL = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeAuth:
    async def ResolveRecipient(self, req: auth_pb2.ResolveRecipientRequest, timeout: float) -> Any:
        local, _, domain = req.address.partition("@")
        if domain != "example.test":
            return auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_REMOTE)
        if local == "gone":
            return auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL)
        if local == "off":
            return auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_DISABLED)
        if local == "team":  # an alias: two local users and a forward
            return auth_pb2.ResolveRecipientResponse(
                kind=auth_pb2.RECIPIENT_KIND_LOCAL_USER,
                users=["b@example.test", "c@example.test"],
                remote_targets=["Fwd@remote.test"],
            )
        if local == "fwd":  # an alias that only forwards
            return auth_pb2.ResolveRecipientResponse(
                kind=auth_pb2.RECIPIENT_KIND_LOCAL_USER, remote_targets=["y@remote.test"]
            )
        return auth_pb2.ResolveRecipientResponse(
            kind=auth_pb2.RECIPIENT_KIND_LOCAL_USER, users=[req.address]
        )


class FakeStore:
    def __init__(self) -> None:
        self.delivered: dict[tuple[str, str], bytes] = {}
        self.refuse: dict[str, grpc.StatusCode] = {}

    async def Deliver(self, req: store_pb2.DeliverRequest, timeout: float) -> Any:
        if req.user in self.refuse:
            code = self.refuse[req.user]
            raise grpc.aio.AioRpcError(
                code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"refused: {code.name}"
            )
        key = (req.queue_id, req.user)
        dup = key in self.delivered
        self.delivered.setdefault(key, req.content)
        return store_pb2.DeliverResponse(uid=1, uidvalidity=1, duplicate=dup, mailbox="INBOX")


def inbound(*rcpts: str, mail_from: str = "a@example.test", **kw: Any) -> events_pb2.InboundMessage:
    return events_pb2.InboundMessage(
        queue_id="Q1",
        mail_from=mail_from,
        recipients=[events_pb2.Recipient(address=r) for r in rcpts],
        inline_content=ORIGINAL,
        size=len(ORIGINAL),
        received_at_ms=1_700_000_000_000,
        **kw,
    )


class FakeRelay:
    """Remote domains answer as scripted: domain -> (outcome, code, status, text)."""

    def __init__(self) -> None:
        self.script: dict[str, tuple[Outcome, str, str, str]] = {}
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.without_dsn = False

    async def deliver(
        self,
        domain: str,
        envelope: Envelope,
        rcpts: Sequence[Rcpt],
        content: bytes,
        finish: Finish | None = None,
    ) -> list[RecipientResult]:
        if finish is not None:
            content = await finish(content)
        self.sent.append((domain, [r.address for r in rcpts], content))
        outcome, code, status, text = self.script.get(
            domain, (Outcome.BOUNCED, "550", "5.1.2", "no such domain")
        )
        return [
            RecipientResult(
                r.address,
                outcome,
                code,
                status,
                text,
                "mx." + domain,
                f"{code} {status} {text}",
                relayed_without_dsn=self.without_dsn,
            )
            for r in rcpts
        ]


class FakeQueue:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], queue_pb2.QueueEntry] = {}
        self.rescheduled: list[queue_pb2.RescheduleRequest] = []
        self.deleted: list[tuple[str, str]] = []
        self.claimed: list[tuple[str, str]] = []
        self.delete_calls = 0
        self.ignores_leases = False
        self.leases: list[tuple[str, int]] = []  # (lease_owner, lease_seconds) per Enqueue
        self.down = False
        self.blobs: dict[str, bytes] = {}  # sent back when Enqueue asks (content_max_bytes)
        self.forgets_delay_notices = False  # a store from before delay_notified_at_ms

    async def Enqueue(self, req: queue_pb2.EnqueueRequest, timeout: float) -> Any:
        if self.down:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
            )
        key = (req.queue_id, req.recipient.address)
        dup = key in self.entries
        self.entries.setdefault(
            key,
            queue_pb2.QueueEntry(
                queue_id=req.queue_id, recipient=req.recipient, message=req.message,
                attempts=req.attempts, next_attempt_at_ms=req.next_attempt_at_ms,
                last_error=req.last_error, created_at_ms=int(time.time() * 1000),
                lease_owner=req.lease_owner,
            ),
        )  # fmt: skip
        self.leases.append((req.lease_owner, req.lease_seconds))
        if self.ignores_leases:  # a store from before EnqueueRequest.lease_owner
            self.entries[key].lease_owner = ""
        content = b""
        if req.content_max_bytes and not dup:
            content = self.blobs.get(req.message.blob_id, b"")[: req.content_max_bytes]
        return queue_pb2.EnqueueResponse(entry=self.entries[key], duplicate=dup, content=content)

    async def DeleteMany(self, req: queue_pb2.DeleteManyRequest, timeout: float) -> Any:
        self.delete_calls += 1
        outcomes = []
        for e in req.entries:
            if (e.queue_id, e.recipient) not in self.entries:
                outcomes.append(queue_pb2.DELETE_OUTCOME_NOT_FOUND)
                continue
            await self.Delete(e, timeout)
            outcomes.append(queue_pb2.DELETE_OUTCOME_DELETED)
        return queue_pb2.DeleteManyResponse(outcomes=outcomes)

    async def ClaimDue(self, req: queue_pb2.ClaimDueRequest, timeout: float) -> Any:
        free = [e for e in self.entries.values() if not e.lease_owner][: req.max_items]
        for e in free:
            e.lease_owner = req.owner
            self.claimed.append((e.queue_id, e.recipient.address))
        return queue_pb2.ClaimDueResponse(entries=free)

    async def Stats(self, req: queue_pb2.QueueStatsRequest, timeout: float) -> Any:
        return queue_pb2.QueueStatsResponse(entries=len(self.entries))

    async def Reschedule(self, req: queue_pb2.RescheduleRequest, timeout: float) -> Any:
        self.rescheduled.append(req)
        e = self.entries[req.queue_id, req.recipient]
        e.attempts += 1
        e.next_attempt_at_ms = req.next_attempt_at_ms
        e.last_error = req.last_error
        if not self.forgets_delay_notices and not e.delay_notified_at_ms:
            e.delay_notified_at_ms = req.delay_notified_at_ms  # the first recorded stays
        e.lease_owner = ""
        answer = queue_pb2.QueueEntry()
        answer.CopyFrom(e)
        return answer

    async def Delete(self, req: queue_pb2.DeleteQueueEntryRequest, timeout: float) -> Any:
        self.deleted.append((req.queue_id, req.recipient))
        del self.entries[req.queue_id, req.recipient]
        return queue_pb2.DeleteQueueEntryResponse()


async def make_service(
    tmp_path: Path, **settings: Any
) -> tuple[DeliveryService, FakeStore, SqliteBus]:
    bus = SqliteBus(tmp_path / "bus.sqlite3")
    svc = DeliveryService(
        DeliverySettings(
            data_dir=tmp_path, hostname="mx.example.test", grpc_plaintext=True, **settings
        ),
        bus=bus,
    )
    store = FakeStore()
    svc.auth = FakeAuth()  # type: ignore[assignment]
    svc.local = LocalDelivery(store, 5)  # type: ignore[arg-type]
    svc.relay = FakeRelay()  # type: ignore[assignment]
    svc.queue = FakeQueue()  # type: ignore[assignment]
    svc.workers.queue = svc.queue
    svc.deletes.queue = svc.queue
    svc.signer = None
    await bus.start()
    return svc, store, bus


async def published(bus: SqliteBus, topic: str) -> list[bytes]:
    assert bus._conn is not None
    rows = await bus._conn.run(
        lambda c: c.execute(
            "SELECT value FROM records WHERE topic = ? ORDER BY seq", (topic,)
        ).fetchall()
    )
    return [bytes(r[0]) for r in rows]


async def test_local_recipients_delivered_once_even_when_redelivered(tmp_path: Path) -> None:
    svc, store, bus = await make_service(tmp_path)
    rec = BusRecord(
        topics.INBOUND, "Q1", inbound("b@example.test", "c@example.test").SerializeToString(), 0, 1
    )
    await svc.handle(rec)
    await svc.handle(rec)  # at-least-once: the same record again
    assert store.delivered == {
        ("Q1", "b@example.test"): ORIGINAL,
        ("Q1", "c@example.test"): ORIGINAL,
    }
    events = [
        events_pb2.DeliveryEvent.FromString(v) for v in await published(bus, topics.DELIVERY_EVENTS)
    ]
    assert {e.outcome for e in events} == {events_pb2.DeliveryEvent.OUTCOME_DELIVERED}
    assert await published(bus, topics.INBOUND) == []  # no bounce
    await bus.stop()


async def test_alias_delivers_each_user_once_and_queues_its_forwards(tmp_path: Path) -> None:
    svc, store, bus = await make_service(tmp_path)
    msg = inbound("team@example.test", "b@example.test", "fwd@example.test", "off@example.test")
    msg.recipients[0].notify.append("FAILURE")
    rec = BusRecord(topics.INBOUND, "Q1", msg.SerializeToString(), 0, 1)
    await svc.handle(rec)
    await svc.handle(rec)  # redelivered: still one copy each
    assert sorted(store.delivered) == [("Q1", "b@example.test"), ("Q1", "c@example.test")]
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    assert sorted(queue.entries) == [("Q1", "Fwd@remote.test"), ("Q1", "y@remote.test")]
    fwd = queue.entries["Q1", "Fwd@remote.test"].recipient
    # RFC 3461: the alias's DSN parameters travel with its targets, ORCPT names the alias.
    assert list(fwd.notify) == ["FAILURE"] and fwd.orcpt == "rfc822;team@example.test"
    reports = [
        events_pb2.InboundMessage.FromString(v) for v in await published(bus, topics.INBOUND)
    ]
    # Only the disabled mailbox bounced (once per handling of the record).
    assert reports and all(b"Status: 5.2.1" in r.inline_content for r in reports)
    assert all(b"off@example.test" in r.inline_content for r in reports)
    await bus.stop()


async def test_unknown_and_remote_recipients_bounce_to_sender_with_rfc3464_report(
    tmp_path: Path,
) -> None:
    svc, store, bus = await make_service(tmp_path)
    msg = inbound("b@example.test", "gone@example.test", "x@remote.test", envid="ENV-1")
    await svc.handle(BusRecord(topics.INBOUND, "Q1", msg.SerializeToString(), 0, 1))
    assert list(store.delivered) == [("Q1", "b@example.test")]
    # The remote recipient is in the queue, due now; nothing was sent from the bus consumer.
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    assert list(queue.entries) == [("Q1", "x@remote.test")]
    assert svc.relay.sent == []  # type: ignore[attr-defined]
    await svc.retry(list(queue.entries.values()))
    assert queue.entries == {} and queue.deleted == [("Q1", "x@remote.test")]
    reports = [
        events_pb2.InboundMessage.FromString(v) for v in await published(bus, topics.INBOUND)
    ]
    assert len(reports) == 2  # the local 5.1.1 now, the remote 5.1.2 after its attempt
    for dsn in reports:
        assert dsn.mail_from == "" and [r.address for r in dsn.recipients] == ["a@example.test"]
    parsed = email.message_from_bytes(reports[0].inline_content, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    status = parts[1].as_string()
    assert "Reporting-MTA: dns; mx.example.test" in status
    assert "Original-Envelope-Id: ENV-1" in status
    assert "Final-Recipient: rfc822; gone@example.test" in status and "Status: 5.1.1" in status
    assert "Final-Recipient: rfc822; b@example.test" not in status
    assert b"Subject: hi" in parts[2].as_bytes()
    remote = reports[1].inline_content
    assert b"Final-Recipient: rfc822; x@remote.test" in remote and b"Status: 5.1.2" in remote
    assert b"Remote-MTA: dns; mx.remote.test" in remote
    await bus.stop()


async def test_deferral_reschedules_on_the_schedule_then_fails_as_postfix_does(
    tmp_path: Path,
) -> None:
    svc, _store, bus = await make_service(tmp_path, retry_schedule="1m,5m", queue_lifetime="1h")
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.DEFERRED, "451", "4.3.0", "try later")
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    await svc.process(inbound("x@remote.test"))
    before = int(time.time() * 1000)
    for expected_delay in (60_000, 300_000, 300_000):
        await svc.retry(list(queue.entries.values()))
        req = queue.rescheduled[-1]
        assert before + expected_delay <= req.next_attempt_at_ms <= before + expected_delay + 5000
        assert req.last_error == "451 4.3.0 try later"
    assert [e.attempts for e in queue.entries.values()] == [3]
    assert await published(bus, topics.INBOUND) == []  # no delay notices
    events = [
        events_pb2.DeliveryEvent.FromString(v) for v in await published(bus, topics.DELIVERY_EVENTS)
    ]
    assert [(e.attempt, e.outcome, e.remote_mta) for e in events] == [
        (0, events_pb2.DeliveryEvent.OUTCOME_QUEUED, "")
    ] + [(n, events_pb2.DeliveryEvent.OUTCOME_DEFERRED, "mx.remote.test") for n in (1, 2, 3)]
    assert {(e.mail_from, e.received_at_ms) for e in events} == {
        ("a@example.test", 1_700_000_000_000)
    }
    # Past the lifetime, the next deferral is final.
    for e in queue.entries.values():
        e.created_at_ms -= 3600_000
    await svc.retry(list(queue.entries.values()))
    assert queue.entries == {}
    [raw] = await published(bus, topics.INBOUND)
    dsn = events_pb2.InboundMessage.FromString(raw)
    unfolded = dsn.inline_content.replace(b"\r\n ", b" ")
    # Postfix 3.7 on expiry: Action failed, the last deferral's status (RFC 3463 class 4, a
    # persistent transient failure), the host and its reply; never 5.4.7.
    for line in (
        b"Action: failed",
        b"Status: 4.3.0",
        b"Remote-MTA: dns; mx.remote.test",
        b"Diagnostic-Code: smtp; 451 4.3.0 try later",
    ):
        assert line in unfolded, unfolded
    assert b"5.4.7" not in unfolded
    # The human-readable part says why it was given up.
    assert b"451 4.3.0 delivery time expired; last error: try later" in unfolded
    await bus.stop()


async def test_an_expired_recipient_without_a_reply_fails_with_the_last_error(
    tmp_path: Path,
) -> None:
    """No host ever answered (connection refused): the failure says this system's words,
    X-Postmesh, with the last deferral's status and code (Postfix: X-Postfix, the last
    reason), no Remote-MTA, and no status that contradicts its own reply code."""
    svc, _store, bus = await make_service(tmp_path, queue_lifetime="1h")
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    await svc.process(inbound("x@remote.test"))
    refused = RecipientResult(
        "x@remote.test", Outcome.DEFERRED, "451", "4.4.1",
        "connection to mx.remote.test[192.0.2.1]:25 failed: Connection refused",
    )  # fmt: skip

    async def unreachable(*_a: Any, **_k: Any) -> list[RecipientResult]:
        return [refused]

    relay.deliver = unreachable  # type: ignore[method-assign]
    for e in queue.entries.values():
        e.created_at_ms -= 3600_000
    await svc.retry(list(queue.entries.values()))
    assert queue.entries == {}
    [raw] = await published(bus, topics.INBOUND)
    text = b" ".join(events_pb2.InboundMessage.FromString(raw).inline_content.split())
    assert b"Action: failed" in text and b"Status: 4.4.1" in text, text
    assert b"Remote-MTA" not in text
    assert (
        b"Diagnostic-Code: X-Postmesh; 451 4.4.1 delivery time expired; last error: "
        b"connection to mx.remote.test[192.0.2.1]:25 failed: Connection refused"
    ) in text, text
    await bus.stop()


async def test_first_attempt_is_born_leased_when_the_workers_have_room(tmp_path: Path) -> None:
    """The consumer's entries are leased to this replica at Enqueue and attempted at once with
    the content at hand; when the workers are full they are left for the claim loop."""
    svc, _store, bus = await make_service(tmp_path, queue_concurrency=2, queue_poll_seconds=0.05)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    workers = asyncio.create_task(svc.workers.run())

    async def drained() -> None:
        while queue.entries or svc.workers._busy:  # noqa: ASYNC110 (state of a fake, no event)
            await asyncio.sleep(0.01)

    await asyncio.sleep(0)
    await svc.process(inbound("x@remote.test", "y@remote.test"))
    assert queue.leases == [(svc.workers.owner, svc.settings.queue_lease_seconds)] * 2
    await asyncio.wait_for(drained(), 10)
    assert relay.sent == [("remote.test", ["x@remote.test", "y@remote.test"], ORIGINAL)]
    assert queue.claimed == [] and len(queue.deleted) == 2
    # Three recipients do not fit two free slots: enqueued unleased, claimed by the loop.
    msg = inbound("p@remote.test", "q@remote.test", "r@remote.test")
    msg.queue_id = "Q2"
    await svc.process(msg)
    assert queue.leases[2:] == [("", 0)] * 3
    await asyncio.wait_for(drained(), 10)
    assert sorted(queue.claimed) == [("Q2", f"{r}@remote.test") for r in "pqr"]
    assert sorted(r for _, rcpts, _ in relay.sent[1:] for r in rcpts) == [
        f"{r}@remote.test" for r in "pqr"
    ]
    # An older store ignores the lease: the entry is free, so only the claim loop attempts it.
    queue.ignores_leases = True
    msg.queue_id = "Q3"
    del msg.recipients[1:]
    sent_before = len(relay.sent)
    await svc.process(msg)
    await asyncio.wait_for(drained(), 10)
    assert queue.claimed[-1] == ("Q3", "p@remote.test")
    assert relay.sent[sent_before:] == [("remote.test", ["p@remote.test"], ORIGINAL)]  # once
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    await bus.stop()


async def stop(task: asyncio.Task[None]) -> None:
    """One cancellation stops the workers (their wait is an asyncio.timeout, which, unlike
    Python 3.11's wait_for, never drops one)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the queue workers ignored their cancellation"


def fresh(msg: events_pb2.InboundMessage) -> BusRecord:
    """A record the bus knows was never handled before (published after the consumer began)."""
    return BusRecord(topics.INBOUND, msg.queue_id, msg.SerializeToString(), 0, 1, maybe_seen=False)


async def outcomes(bus: SqliteBus) -> list[tuple[str, int]]:
    return [
        (e.recipient, e.outcome)
        for e in map(
            events_pb2.DeliveryEvent.FromString, await published(bus, topics.DELIVERY_EVENTS)
        )
    ]


async def test_a_new_record_is_relayed_before_anything_is_queued(tmp_path: Path) -> None:
    """ADR 58: the first attempt of a new record's remote recipients comes before any queue
    entry; one that is relayed (or bounced) never has one, a deferred one is queued then,
    due at its next attempt's time. A record that may have been handled before is queued
    first, so Enqueue finds what the earlier handling queued."""
    svc, _store, bus = await make_service(tmp_path, queue_poll_seconds=0.05)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
    relay.script["later.test"] = (Outcome.DEFERRED, "451", "4.3.0", "come back later")
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    workers = asyncio.create_task(svc.workers.run())
    await asyncio.sleep(0)
    before = int(time.time() * 1000)
    await svc.handle(fresh(inbound("x@remote.test", "y@later.test", "b@example.test")))
    assert sorted(relay.sent) == [
        ("later.test", ["y@later.test"], ORIGINAL), ("remote.test", ["x@remote.test"], ORIGINAL)
    ]  # fmt: skip
    assert queue.leases == [("", 0)] and list(queue.entries) == [("Q1", "y@later.test")]
    entry = queue.entries["Q1", "y@later.test"]
    assert entry.attempts == 1 and "451 4.3.0 come back later" in entry.last_error
    assert entry.next_attempt_at_ms >= before + 60_000  # the schedule's first step, 1m
    assert entry.message.inline_content == ORIGINAL
    ev = events_pb2.DeliveryEvent
    assert sorted(await outcomes(bus)) == [
        ("b@example.test", ev.OUTCOME_DELIVERED), ("x@remote.test", ev.OUTCOME_RELAYED),
        ("y@later.test", ev.OUTCOME_DEFERRED),
    ]  # fmt: skip
    assert svc.workers._busy == 0 and queue.deleted == []
    # The same record again, as after a restart: through the queue, whose Enqueue knows it.
    await svc.handle(
        BusRecord(topics.INBOUND, "Q1", inbound("y@later.test").SerializeToString(), 0, 1)
    )
    assert [d for d, _, _ in relay.sent].count("later.test") == 1
    assert queue.leases[1:] == [(svc.workers.owner, svc.settings.queue_lease_seconds)]
    await stop(workers)
    await bus.stop()


async def test_a_first_attempt_that_outlasts_its_wait_is_queued_and_finished_once(
    tmp_path: Path,
) -> None:
    """The consumer waits relay_first_attempt_seconds at most: then the recipients are queued
    born leased (with the content) and the record may be committed, while the attempt goes
    on; its end deletes the entries, as a queue worker's would. Nothing is sent twice."""
    svc, _store, bus = await make_service(
        tmp_path, queue_poll_seconds=0.05, relay_first_attempt_seconds=0.05
    )
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
    go = asyncio.Event()
    deliver = relay.deliver

    async def slow(*args: Any, **kwargs: Any) -> list[RecipientResult]:
        await go.wait()
        return await deliver(*args, **kwargs)

    relay.deliver = slow  # type: ignore[method-assign]
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    workers = asyncio.create_task(svc.workers.run())
    await asyncio.sleep(0)
    await asyncio.wait_for(svc.handle(fresh(inbound("x@remote.test", "y@remote.test"))), 5)
    assert sorted(queue.entries) == [("Q1", "x@remote.test"), ("Q1", "y@remote.test")]
    assert queue.leases == [(svc.workers.owner, svc.settings.queue_lease_seconds)] * 2
    assert relay.sent == [] and svc.workers._busy == 2
    go.set()
    while queue.entries or svc.workers._busy:  # noqa: ASYNC110 (state of a fake, no event)
        await asyncio.sleep(0.01)
    assert relay.sent == [("remote.test", ["x@remote.test", "y@remote.test"], ORIGINAL)]
    assert queue.claimed == [] and len(queue.deleted) == 2
    ev = events_pb2.DeliveryEvent
    assert await outcomes(bus) == [
        ("x@remote.test", ev.OUTCOME_QUEUED), ("y@remote.test", ev.OUTCOME_QUEUED),
        ("x@remote.test", ev.OUTCOME_RELAYED), ("y@remote.test", ev.OUTCOME_RELAYED),
    ]  # fmt: skip
    await stop(workers)
    await bus.stop()


async def test_first_attempt_off_or_workers_full_queues_first(tmp_path: Path) -> None:
    """relay_first_attempt_seconds=0, or no room in the workers: Enqueue before any attempt
    (born leased when there is room, else for the claim loop)."""
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"relay_first_attempt_seconds": 0}, True),
        ({"queue_concurrency": 1}, False),
    ]
    for i, (settings, leased) in enumerate(cases):
        svc, _store, bus = await make_service(tmp_path / str(i), **settings)
        relay: FakeRelay = svc.relay  # type: ignore[assignment]
        relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
        queue: FakeQueue = svc.queue  # type: ignore[assignment]
        svc.workers._started = True  # room as a running claim loop would have
        await svc.handle(fresh(inbound("x@remote.test", "y@remote.test")))
        lease = (svc.workers.owner, svc.settings.queue_lease_seconds) if leased else ("", 0)
        assert queue.leases == [lease] * 2
        assert sorted(queue.entries) == [("Q1", "x@remote.test"), ("Q1", "y@remote.test")]
        await asyncio.sleep(0.05)  # a born-leased attempt runs as a worker's task, after
        assert len(relay.sent) == (1 if leased else 0)
        await bus.stop()


async def test_a_blob_message_attempted_at_once_has_its_content_from_enqueue(
    tmp_path: Path,
) -> None:
    """A large message (claim check, blob_id) born leased: Enqueue's answer brings the
    content (EnqueueRequest.content_max_bytes), so the attempt reads no blob (this FakeStore
    has no GetBlob at all)."""
    svc, _store, bus = await make_service(tmp_path, queue_poll_seconds=0.05)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    queue.blobs["b" * 64] = ORIGINAL
    workers = asyncio.create_task(svc.workers.run())
    await asyncio.sleep(0)
    msg = inbound("x@remote.test", "y@remote.test")
    msg.blob_id = "b" * 64  # replaces the inline content
    await svc.process(msg)

    async def drained() -> None:
        while queue.entries or svc.workers._busy:  # noqa: ASYNC110 (state of a fake, no event)
            await asyncio.sleep(0.01)

    await asyncio.wait_for(drained(), 10)
    assert relay.sent == [("remote.test", ["x@remote.test", "y@remote.test"], ORIGINAL)]
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    await bus.stop()


async def test_notify_success_relayed_to_a_peer_without_dsn_gets_a_relayed_report(
    tmp_path: Path,
) -> None:
    svc, _store, bus = await make_service(tmp_path)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.RELAYED, "250", "2.0.0", "ok")
    relay.without_dsn = True
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    msg = inbound("x@remote.test")
    msg.recipients[0].notify.append("SUCCESS")
    await svc.process(msg)
    await svc.retry(list(queue.entries.values()))
    [raw] = await published(bus, topics.INBOUND)
    dsn = events_pb2.InboundMessage.FromString(raw).inline_content
    assert b"Action: relayed" in dsn and b"Final-Recipient: rfc822; x@remote.test" in dsn
    assert b"text/rfc822-headers" in dsn  # a success report returns the headers only
    await bus.stop()


async def test_null_sender_failures_are_never_bounced(tmp_path: Path) -> None:
    svc, _store, bus = await make_service(tmp_path)
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    await svc.process(inbound("x@remote.test", "gone@example.test", mail_from=""))
    await svc.retry(list(queue.entries.values()))
    assert queue.entries == {}
    assert await published(bus, topics.INBOUND) == []
    await bus.stop()


async def test_mail_loop_bounces_with_5_4_6(tmp_path: Path) -> None:
    svc, store, bus = await make_service(tmp_path, max_received_headers=3)
    looped = b"Received: from a by b\r\n" * 4 + ORIGINAL
    msg = inbound("b@example.test", "x@remote.test")
    msg.inline_content = looped
    await svc.process(msg)
    assert store.delivered == {} and svc.queue.entries == {}  # type: ignore[attr-defined]
    [raw] = await published(bus, topics.INBOUND)
    assert b"Status: 5.4.6" in events_pb2.InboundMessage.FromString(raw).inline_content
    await bus.stop()


async def test_store_outage_at_enqueue_raises_so_the_bus_retries(tmp_path: Path) -> None:
    svc, store, bus = await make_service(tmp_path)
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    queue.down = True
    with pytest.raises(grpc.aio.AioRpcError):
        await svc.process(inbound("b@example.test", "x@remote.test"))
    queue.down = False
    await svc.process(inbound("b@example.test", "x@remote.test"))  # the bus's repeat
    assert list(store.delivered) == [("Q1", "b@example.test")]
    assert list(queue.entries) == [("Q1", "x@remote.test")]
    await bus.stop()


def test_no_bounce_for_null_sender_or_notify_never() -> None:
    msg = inbound("x@remote.test", mail_from="")
    assert not wants_failure_notice(msg, msg.recipients[0])
    msg = inbound("x@remote.test")
    rcpt = events_pb2.Recipient(address="x@remote.test", notify=["NEVER"])
    assert not wants_failure_notice(msg, rcpt)
    assert wants_failure_notice(
        msg, events_pb2.Recipient(address="x@remote.test", notify=["FAILURE", "DELAY"])
    )


async def test_undecodable_record_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    svc, store, bus = await make_service(tmp_path)
    await svc.handle(BusRecord(topics.INBOUND, "bad", b"\xff\xff\xff", 0, 1))
    assert store.delivered == {}
    await bus.stop()


async def test_full_mailbox_bounces_with_5_2_2_and_other_store_errors_are_retried(
    tmp_path: Path,
) -> None:
    svc, store, bus = await make_service(tmp_path)
    store.refuse["b@example.test"] = grpc.StatusCode.RESOURCE_EXHAUSTED
    await svc.handle(
        BusRecord(topics.INBOUND, "Q1", inbound("b@example.test").SerializeToString(), 0, 1)
    )
    [raw] = await published(bus, topics.INBOUND)
    dsn = events_pb2.InboundMessage.FromString(raw)
    assert b"Status: 5.2.2" in dsn.inline_content
    # An unavailable store is not the recipient's fault: the record is retried by the bus.
    store.refuse["c@example.test"] = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError):
        await svc.handle(
            BusRecord(topics.INBOUND, "Q2", inbound("c@example.test").SerializeToString(), 0, 2)
        )
    await bus.stop()


async def test_workers_renew_leases_while_an_attempt_runs() -> None:
    import asyncio

    from postmesh.delivery.queue import QueueWorkers

    renewed_twice = asyncio.Event()

    class Queue:
        claims: list[queue_pb2.ClaimEntryRequest] = []

        async def Claim(self, req: queue_pb2.ClaimEntryRequest, timeout: float) -> Any:
            self.claims.append(req)
            if len(self.claims) >= 2:
                renewed_twice.set()
            return queue_pb2.QueueEntry()

    release = asyncio.Event()

    async def slow_attempt(entries: Sequence[queue_pb2.QueueEntry], content: bytes | None) -> None:
        await release.wait()

    q = Queue()
    workers = QueueWorkers(
        q,  # type: ignore[arg-type]
        slow_attempt,
        owner="me",
        concurrency=2,
        claim_batch=1,
        lease_seconds=3,  # renewed every second
        poll_seconds=1,
        deadline=1,
    )
    entry = queue_pb2.QueueEntry(queue_id="Q1", recipient=events_pb2.Recipient(address="a@x"))
    workers.run_now([entry])
    await asyncio.wait_for(renewed_twice.wait(), 30)
    release.set()
    assert {(c.queue_id, c.recipient, c.owner, c.lease_seconds) for c in q.claims} == {
        ("Q1", "a@x", "me", 3)
    }
    await asyncio.gather(*workers._running)


async def test_a_forward_target_reports_by_the_aliass_notify_and_orcpt(tmp_path: Path) -> None:
    """RFC 3461 §6.2.7.3: an alias's forward target carries its NOTIFY and names it as ORCPT.
    The first attempt's reports looked both up among the message's own recipients, where the
    target is not: NOTIFY=NEVER still bounced, and Original-Recipient was missing."""
    svc, _store, bus = await make_service(tmp_path)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.BOUNCED, "550", "5.1.1", "no such user")
    workers = asyncio.create_task(svc.workers.run())
    await asyncio.sleep(0)
    never = inbound("fwd@example.test")
    never.recipients[0].notify.append("NEVER")
    await svc.handle(fresh(never))
    assert [d for d, _, _ in relay.sent] == ["remote.test"]  # the first attempt, not the queue
    assert await published(bus, topics.INBOUND) == []
    failure = inbound("fwd@example.test")
    failure.queue_id = "Q2"
    failure.recipients[0].notify.append("FAILURE")
    failure.recipients[0].orcpt = "rfc822;given@orig.test"
    await svc.handle(fresh(failure))
    [report] = [
        events_pb2.InboundMessage.FromString(v) for v in await published(bus, topics.INBOUND)
    ]
    assert b"Final-Recipient: rfc822; y@remote.test" in report.inline_content
    assert b"Original-Recipient: rfc822; given@orig.test" in report.inline_content
    await stop(workers)
    await bus.stop()
