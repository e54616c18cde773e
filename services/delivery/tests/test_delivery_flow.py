from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2
from postmesh.common import topics
from postmesh.common.bus import BusRecord
from postmesh.common.bus.sqlite import SqliteBus
from postmesh.delivery.app import DeliveryService
from postmesh.delivery.dsn import wants_failure_notice
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.settings import DeliverySettings

ORIGINAL = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeAuth:
    async def ResolveRecipient(self, req: auth_pb2.ResolveRecipientRequest, timeout: float) -> Any:
        local, _, domain = req.address.partition("@")
        if domain != "example.test":
            return auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_REMOTE)
        if local == "gone":
            return auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL)
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


async def make_service(tmp_path: Path) -> tuple[DeliveryService, FakeStore, SqliteBus]:
    bus = SqliteBus(tmp_path / "bus.sqlite3")
    svc = DeliveryService(
        DeliverySettings(data_dir=tmp_path, hostname="mx.example.test", grpc_plaintext=True),
        bus=bus,
    )
    store = FakeStore()
    svc.auth = FakeAuth()  # type: ignore[assignment]
    svc.local = LocalDelivery(store, 5)  # type: ignore[arg-type]
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


async def test_unknown_and_remote_recipients_bounce_to_sender_with_rfc3464_report(
    tmp_path: Path,
) -> None:
    svc, store, bus = await make_service(tmp_path)
    msg = inbound("b@example.test", "gone@example.test", "x@remote.test", envid="ENV-1")
    await svc.handle(BusRecord(topics.INBOUND, "Q1", msg.SerializeToString(), 0, 1))
    assert list(store.delivered) == [("Q1", "b@example.test")]
    [raw] = await published(bus, topics.INBOUND)
    dsn = events_pb2.InboundMessage.FromString(raw)
    assert dsn.mail_from == "" and [r.address for r in dsn.recipients] == ["a@example.test"]
    parsed = email.message_from_bytes(dsn.inline_content, policy=email.policy.default)
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
    assert "Final-Recipient: rfc822; gone@example.test" in status
    assert "Status: 5.1.1" in status and "Final-Recipient: rfc822; x@remote.test" in status
    assert "Final-Recipient: rfc822; b@example.test" not in status
    assert b"Subject: hi" in parts[2].as_bytes()
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
