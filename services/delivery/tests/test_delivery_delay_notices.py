"""Delay notices (RFC 3461 §4.1 NOTIFY=DELAY, RFC 3464 Action: delayed): one per queued
recipient once it has been deferred longer than POSTMESH_DELIVERY_DELAY_WARNING_SECONDS,
whichever replica makes the retry, recorded with the queue entry."""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import REGISTRY
from test_delivery_flow import FakeQueue, FakeRelay, inbound, make_service, published

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2
from postmesh.common import topics
from postmesh.common.bus.sqlite import SqliteBus
from postmesh.delivery.admin_api import EntryOut, _when
from postmesh.delivery.app import DeliveryService
from postmesh.delivery.dsn import build_dsn
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.queue import group_entries

HOUR_MS = 3600_000
LIFETIME_MS = 5 * 24 * HOUR_MS


async def deferring(
    tmp_path: Path, **settings: Any
) -> tuple[DeliveryService, FakeQueue, SqliteBus]:
    """A delivery service whose remote.test MX answers 451 to everything; warning after 1 h."""
    settings = {"delivery_delay_warning_seconds": 3600, "retry_schedule": "1m", **settings}
    svc, _store, bus = await make_service(tmp_path, **settings)
    relay: FakeRelay = svc.relay  # type: ignore[assignment]
    relay.script["remote.test"] = (Outcome.DEFERRED, "451", "4.3.0", "try later")
    return svc, svc.queue, bus  # type: ignore[return-value]


def age(queue: FakeQueue, ms: int) -> None:
    """Every entry was queued ``ms`` earlier than it says."""
    for e in queue.entries.values():
        e.created_at_ms -= ms


async def retry(svc: DeliveryService, queue: FakeQueue) -> None:
    """One attempt of every entry, a group (message, domain) at a time, as the workers do."""
    for group in group_entries(list(queue.entries.values())):
        await svc.retry(group)


async def reports(bus: SqliteBus) -> list[events_pb2.InboundMessage]:
    return [events_pb2.InboundMessage.FromString(v) for v in await published(bus, topics.INBOUND)]


def parsed(report: events_pb2.InboundMessage) -> EmailMessage:
    out = email.message_from_bytes(report.inline_content, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    return out


def status_text(report: events_pb2.InboundMessage) -> str:
    _human, status, *_ = parsed(report).iter_parts()
    return " ".join(status.as_string().split())  # unfolded


async def another_replica(tmp_path: Path, svc: DeliveryService) -> DeliveryService:
    """A second delivery process (another pod, or this one restarted) on the same queue and
    bus, with nothing in memory from the first."""
    other, _store, own_bus = await make_service(
        tmp_path / "replica", delivery_delay_warning_seconds=3600, retry_schedule="1m"
    )
    await own_bus.stop()
    other.bus = svc.bus
    other.relay = svc.relay
    other.queue = other.workers.queue = other.deletes.queue = svc.queue
    assert other.workers.owner != svc.workers.owner
    return other


def notices_counted() -> float:
    return REGISTRY.get_sample_value("postmesh_delivery_delay_notices_total") or 0.0


async def test_one_delay_notice_per_recipient_across_retries_and_replicas(
    tmp_path: Path,
) -> None:
    svc, queue, bus = await deferring(tmp_path)
    counted = notices_counted()
    await svc.process(inbound("x@remote.test", envid="ENV-9"))
    await retry(svc, queue)  # deferred, but only just queued: no notice yet
    age(queue, 30 * 60_000)
    await retry(svc, queue)  # half an hour: still none
    assert await reports(bus) == []
    assert [r.delay_notified_at_ms for r in queue.rescheduled] == [0, 0]

    age(queue, 31 * 60_000)  # past the hour
    await retry(svc, queue)
    await retry(svc, queue)  # this replica again
    await retry(await another_replica(tmp_path, svc), queue)  # or another one, or a restart
    [entry] = queue.entries.values()
    assert entry.attempts == 5  # every retry was made, and deferred
    [notice] = await reports(bus)
    told = queue.rescheduled[2].delay_notified_at_ms
    assert told and entry.delay_notified_at_ms == told
    # The queue admin API shows it (as the other times, RFC 3339).
    assert EntryOut.of(entry).delay_notified_at == _when(told)
    assert EntryOut.of(queue_pb2.QueueEntry()).delay_notified_at is None
    assert [r.delay_notified_at_ms for r in queue.rescheduled[3:]] == [0, 0]
    assert notices_counted() == counted + 1

    # To the sender, from <>, about the recipient, with the last reply and when it gives up.
    assert notice.mail_from == "" and [r.address for r in notice.recipients] == ["a@example.test"]
    report = parsed(notice)
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert report["Auto-Submitted"] == "auto-replied"
    human, status, returned = report.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    until = email.utils.formatdate((entry.created_at_ms + LIFETIME_MS) / 1000)
    text = status_text(notice)
    for line in (
        "Original-Envelope-Id: ENV-9",
        "Final-Recipient: rfc822; x@remote.test",
        "Action: delayed",
        "Status: 4.3.0",
        "Remote-MTA: dns; mx.remote.test",
        "Diagnostic-Code: smtp; 451 4.3.0 try later",
        f"Will-Retry-Until: {until}",
    ):
        assert line in text, text
    assert "<x@remote.test>: 451 4.3.0 try later (from mx.remote.test)" in human.get_content()
    assert f"until {until}" in " ".join(human.get_content().split())
    # RFC 3461 §4.3: a delay report carries the header section, never the whole message.
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: hi" in returned.get_content() and "body" not in returned.get_content()
    await bus.stop()


async def test_notify_decides_and_no_notify_means_failure_and_delay(tmp_path: Path) -> None:
    """RFC 3461 §4.1: DELAY asks for the notice; without NOTIFY it is "FAILURE,DELAY" (as
    Postfix); FAILURE, SUCCESS,FAILURE or NEVER alone do not. One report for the message's
    recipients that asked, and only theirs are marked as told."""
    svc, queue, bus = await deferring(tmp_path)
    notify = {
        "plain@remote.test": [],
        "delay@remote.test": ["DELAY"],
        "both@remote.test": ["FAILURE", "DELAY"],
        "fail@remote.test": ["FAILURE"],
        "success@remote.test": ["SUCCESS", "FAILURE"],
        "never@remote.test": ["NEVER"],
    }
    msg = inbound(*notify)
    for r in msg.recipients:
        r.notify.extend(notify[r.address])
    await svc.process(msg)
    age(queue, 2 * HOUR_MS)
    await retry(svc, queue)
    await retry(svc, queue)
    [notice] = await reports(bus)
    text = status_text(notice)
    told = ["plain@remote.test", "delay@remote.test", "both@remote.test"]
    for address in notify:
        assert (f"Final-Recipient: rfc822; {address}" in text) is (address in told), address
    assert text.count("Action: delayed") == 3
    marked = {q[1] for q, e in queue.entries.items() if e.delay_notified_at_ms}
    assert marked == set(told)
    await bus.stop()


async def test_never_to_the_null_sender_nor_about_a_report(tmp_path: Path) -> None:
    """A report (from <>) that cannot reach a remote sender is retried like any message, and
    nobody is told: RFC 3464 §2 / RFC 5321 §4.5.5, no report about a report."""
    svc, queue, bus = await deferring(tmp_path)
    failed = RecipientResult("gone@example.test", Outcome.BOUNCED, "550", "5.1.1", "unknown")
    original = inbound("gone@example.test", mail_from="someone@remote.test")
    report = build_dsn(original, [failed], original.inline_content, "mx.example.test")
    assert report.mail_from == ""
    await svc.process(report)
    await svc.process(inbound("y@remote.test", mail_from=""))  # any null-sender message
    age(queue, 2 * HOUR_MS)
    await retry(svc, queue)
    assert len(queue.entries) == 2 and all(e.attempts == 1 for e in queue.entries.values())
    assert await reports(bus) == []
    assert not any(e.delay_notified_at_ms for e in queue.entries.values())
    await bus.stop()


async def test_zero_turns_delay_notices_off(tmp_path: Path) -> None:
    svc, queue, bus = await deferring(tmp_path, delivery_delay_warning_seconds=0)
    await svc.process(inbound("x@remote.test"))
    age(queue, 4 * 24 * HOUR_MS)
    await retry(svc, queue)
    assert await reports(bus) == [] and queue.rescheduled[-1].delay_notified_at_ms == 0
    await bus.stop()


async def test_expiry_still_fails_after_a_notice_and_alone_sends_no_notice(
    tmp_path: Path,
) -> None:
    svc, queue, bus = await deferring(tmp_path)
    await svc.process(inbound("x@remote.test"))
    age(queue, 2 * HOUR_MS)
    await retry(svc, queue)
    age(queue, LIFETIME_MS)
    await retry(svc, queue)
    assert queue.entries == {}
    delayed, failed = await reports(bus)
    assert "Action: delayed" in status_text(delayed)
    assert "Action: failed" in status_text(failed) and "Will-Retry-Until" not in status_text(failed)
    # Past both at once (never notified: say the warning time was longer): the failure only.
    await svc.process(inbound("z@remote.test"))
    age(queue, LIFETIME_MS + HOUR_MS)
    await retry(svc, queue)
    *_, last = await reports(bus)
    assert len(await reports(bus)) == 3 and "Action: failed" in status_text(last)
    await bus.stop()


async def test_a_notice_sent_again_after_a_lost_reschedule_is_the_same_message(
    tmp_path: Path,
) -> None:
    """The notice goes out before the Reschedule that records it (at least once, as every
    report). When that Reschedule is lost (the lease ran out and another replica took the
    entry, or the process died), the next attempt sends it again under the same queue id,
    which the store's Deliver deduplicates for a local sender."""
    svc, queue, bus = await deferring(tmp_path)
    await svc.process(inbound("x@remote.test"))
    age(queue, 2 * HOUR_MS)
    reschedule = queue.Reschedule

    async def lost(req: Any, timeout: float) -> Any:
        queue.Reschedule = reschedule  # type: ignore[method-assign]
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), grpc.aio.Metadata()
        )

    queue.Reschedule = lost  # type: ignore[method-assign]
    await retry(svc, queue)
    [entry] = queue.entries.values()
    assert entry.delay_notified_at_ms == 0 and entry.attempts == 0  # nothing recorded
    await retry(svc, queue)
    await retry(svc, queue)
    first, again = await reports(bus)
    assert first.queue_id == again.queue_id and "Action: delayed" in status_text(again)
    assert queue.entries[("Q1", "x@remote.test")].delay_notified_at_ms
    await bus.stop()
