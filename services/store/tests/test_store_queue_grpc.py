"""DeliveryQueueService and MaildropLockService over a real gRPC channel: the real store
(StoreApp on SQLite) on 127.0.0.1 port 0."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc, store_pb2, store_pb2_grpc
from postmesh.common.grpc import channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store.app import StoreApp
from postmesh.store.model import Delivery
from postmesh.store.settings import StoreSettings

CONTENT = b"From: a@example.org\r\nSubject: deferred\r\n\r\nbody\r\n"
BLOB_ID = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[StoreApp]:
    app = StoreApp(
        StoreSettings(
            data_dir=tmp_path, store_listen="127.0.0.1:0", bus="sqlite", grpc_plaintext=True
        )
    )
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def ch(app: StoreApp) -> AsyncIterator[grpc.aio.Channel]:
    c = channel(f"127.0.0.1:{app.port}", GrpcSecurity(), "store")
    yield c
    await c.close()


@pytest.fixture
def queue(ch: grpc.aio.Channel) -> queue_pb2_grpc.DeliveryQueueServiceStub:
    return queue_pb2_grpc.DeliveryQueueServiceStub(ch)


def inbound(**kw: object) -> events_pb2.InboundMessage:
    msg = events_pb2.InboundMessage(
        queue_id="Q1", mail_from="a@example.org", size=len(CONTENT), envid="ENV1", ret="HDRS",
        recipients=[events_pb2.Recipient(address="x@example.net"),
                    events_pb2.Recipient(address="bob@example.net")],
        client=events_pb2.ClientInfo(helo="client.example.org", listener="mx"),
    )  # fmt: skip
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


def enqueue_request(**kw: object) -> queue_pb2.EnqueueRequest:
    req = queue_pb2.EnqueueRequest(
        queue_id="Q1",
        recipient=events_pb2.Recipient(address="bob@example.net", notify=["FAILURE", "DELAY"]),
        message=inbound(inline_content=CONTENT),
        attempts=1,
        last_error="451 4.3.0 try again",
    )
    for k, v in kw.items():
        if isinstance(v, events_pb2.InboundMessage | events_pb2.Recipient):
            getattr(req, k).CopyFrom(v)
        else:
            setattr(req, k, v)
    return req


async def blob(ch: grpc.aio.Channel, blob_id: str) -> bytes:
    stub = store_pb2_grpc.StoreServiceStub(ch)
    call = stub.GetBlob(store_pb2.GetBlobRequest(blob_id=blob_id), timeout=10)
    return b"".join([c.data async for c in call])


async def test_enqueue_inline_content_becomes_a_pinned_blob(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub, ch: grpc.aio.Channel, app: StoreApp
) -> None:
    before = int(time.time() * 1000)
    r = await queue.Enqueue(enqueue_request(), timeout=10)
    assert not r.duplicate
    e = r.entry
    assert (e.queue_id, e.recipient.address, list(e.recipient.notify)) == (
        "Q1", "bob@example.net", ["FAILURE", "DELAY"],
    )  # fmt: skip
    assert (e.attempts, e.last_error, e.lease_owner, e.lease_expires_at_ms) == (
        1, "451 4.3.0 try again", "", 0,
    )  # fmt: skip
    assert before <= e.next_attempt_at_ms <= int(time.time() * 1000)  # 0 meant now
    # The envelope comes back whole, with the content replaced by its blob and only this
    # entry's recipient.
    assert e.message.WhichOneof("content") == "blob_id" and e.message.blob_id == BLOB_ID
    assert (e.message.mail_from, e.message.envid, e.message.client.helo) == (
        "a@example.org", "ENV1", "client.example.org",
    )  # fmt: skip
    assert [x.address for x in e.message.recipients] == ["bob@example.net"]
    assert await blob(ch, BLOB_ID) == CONTENT
    # Stored like a PutBlob upload: no message references it, the pin keeps it.
    assert await app.repo.blob_refcount(BLOB_ID) == 0

    again = await queue.Enqueue(enqueue_request(attempts=9), timeout=10)
    assert again.duplicate and again.entry == e


async def test_enqueue_by_blob_id_and_bad_requests(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub, ch: grpc.aio.Channel
) -> None:
    store = store_pb2_grpc.StoreServiceStub(ch)

    async def chunks() -> AsyncIterator[store_pb2.ContentChunk]:
        yield store_pb2.ContentChunk(data=CONTENT)

    put = await store.PutBlob(chunks(), timeout=10)
    r = await queue.Enqueue(enqueue_request(message=inbound(blob_id=put.blob_id)), timeout=10)
    assert r.entry.message.blob_id == BLOB_ID and r.content == b""  # not asked for
    # Asked for (a caller about to attempt it): a new entry's answer carries the content; a
    # repeat's, and one over the limit, do not.
    asked = enqueue_request(
        recipient=events_pb2.Recipient(address="carol@example.net"),
        message=inbound(blob_id=put.blob_id), content_max_bytes=len(CONTENT),
    )  # fmt: skip
    got = await queue.Enqueue(asked, timeout=10)
    assert not got.duplicate and got.content == CONTENT
    assert (await queue.Enqueue(asked, timeout=10)).content == b""
    asked.recipient.address, asked.content_max_bytes = "dave@example.net", len(CONTENT) - 1
    assert (await queue.Enqueue(asked, timeout=10)).content == b""

    # A new (queue id, recipient) each: a known one answers duplicate before any check.
    bad = [
        enqueue_request(queue_id="Q2", message=inbound(queue_id="", blob_id="0" * 64)),
        enqueue_request(queue_id="Q2", message=inbound(queue_id="")),  # no content at all
        enqueue_request(queue_id="Q2", message=inbound(queue_id="", inline_content=b"")),
        enqueue_request(queue_id="Q2", message=inbound(queue_id="Q3", inline_content=CONTENT)),
        enqueue_request(queue_id="", message=inbound(queue_id="", inline_content=CONTENT)),
        enqueue_request(recipient=events_pb2.Recipient(address="")),
    ]
    for req in bad:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await queue.Enqueue(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req


async def test_claim_reschedule_delete(queue: queue_pb2_grpc.DeliveryQueueServiceStub) -> None:
    await queue.Enqueue(enqueue_request(), timeout=10)
    later = int(time.time() * 1000) + 3_600_000
    await queue.Enqueue(
        enqueue_request(queue_id="Q2", message=inbound(queue_id="Q2", inline_content=CONTENT),
                        next_attempt_at_ms=later),
        timeout=10,
    )  # fmt: skip
    claimed = await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(owner="delivery-0", max_items=10, lease_seconds=60), timeout=10
    )
    (e,) = claimed.entries
    assert (e.queue_id, e.lease_owner) == ("Q1", "delivery-0")
    assert e.lease_expires_at_ms > int(time.time() * 1000) + 50_000
    again = await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(owner="delivery-1", max_items=10, lease_seconds=60), timeout=10
    )
    assert list(again.entries) == []

    resched = queue_pb2.RescheduleRequest(
        queue_id="Q1", recipient="bob@example.net", owner="delivery-1",
        next_attempt_at_ms=later, last_error="452 4.2.2 mailbox full",
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.Reschedule(resched, timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    resched.owner = "delivery-0"
    resched.delay_notified_at_ms = later - 10
    after = await queue.Reschedule(resched, timeout=10)
    assert (after.attempts, after.next_attempt_at_ms, after.last_error, after.lease_owner) == (
        2, later, "452 4.2.2 mailbox full", "",
    )  # fmt: skip
    assert after.delay_notified_at_ms == later - 10  # a delay notice went out (kept)
    listed = await queue.List(queue_pb2.ListQueueRequest(queue_id="Q1"), timeout=10)
    assert [e.delay_notified_at_ms for e in listed.entries] == [later - 10]

    delete = queue_pb2.DeleteQueueEntryRequest(
        queue_id="Q1", recipient="bob@example.net", owner="delivery-0"
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.Delete(delete, timeout=10)  # released by the Reschedule
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    delete.queue_id = "NOPE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.Delete(delete, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.ClaimDue(queue_pb2.ClaimDueRequest(owner="x", max_items=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_claim_due_brings_the_contents_asked_for(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub,
) -> None:
    """ClaimDueRequest.content_max_bytes: each distinct message's content once, only those
    within the limit; 0 (an older delivery) brings none."""
    big = CONTENT + b"x" * 100 + b"\r\n"
    await queue.Enqueue(enqueue_request(), timeout=10)
    await queue.Enqueue(
        enqueue_request(recipient=events_pb2.Recipient(address="carol@example.net")), timeout=10
    )
    await queue.Enqueue(
        enqueue_request(queue_id="Q2", message=inbound(queue_id="Q2", inline_content=big)),
        timeout=10,
    )
    got = await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(
            owner="d", max_items=10, lease_seconds=60, content_max_bytes=len(CONTENT) + 10
        ),
        timeout=10,
    )
    assert len(got.entries) == 3
    # Q2's content is over the limit: its attempt reads it with GetBlob.
    assert dict(got.contents) == {BLOB_ID: CONTENT}
    q3 = inbound(queue_id="Q3", inline_content=CONTENT)
    await queue.Enqueue(enqueue_request(queue_id="Q3", message=q3), timeout=10)
    plain = await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(owner="d", max_items=10, lease_seconds=60), timeout=10
    )
    assert len(plain.entries) == 1 and dict(plain.contents) == {}


async def test_enqueue_born_leased_needs_no_claim(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub,
) -> None:
    r = await queue.Enqueue(
        enqueue_request(attempts=0, lease_owner="delivery-0", lease_seconds=60), timeout=10
    )
    assert r.entry.lease_owner == "delivery-0"
    assert r.entry.lease_expires_at_ms > int(time.time() * 1000) + 50_000
    others = await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(owner="delivery-1", max_items=10, lease_seconds=60), timeout=10
    )
    assert list(others.entries) == []
    again = await queue.Enqueue(
        enqueue_request(attempts=0, lease_owner="delivery-1", lease_seconds=60), timeout=10
    )
    assert again.duplicate and again.entry.lease_owner == "delivery-0"
    await queue.Delete(
        queue_pb2.DeleteQueueEntryRequest(
            queue_id="Q1", recipient="bob@example.net", owner="delivery-0"
        ),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.Enqueue(
            enqueue_request(queue_id="Q2", message=inbound(queue_id="", inline_content=CONTENT),
                            lease_owner="delivery-0"),
            timeout=10,
        )  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # a lease needs its length


async def test_delete_many_answers_per_entry(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub,
) -> None:
    for q in ("Q1", "Q2"):
        await queue.Enqueue(
            enqueue_request(queue_id=q, message=inbound(queue_id=q, inline_content=CONTENT),
                            lease_owner="delivery-0", lease_seconds=60),
            timeout=10,
        )  # fmt: skip

    def item(q: str, owner: str) -> queue_pb2.DeleteQueueEntryRequest:
        return queue_pb2.DeleteQueueEntryRequest(
            queue_id=q, recipient="bob@example.net", owner=owner
        )

    r = await queue.DeleteMany(
        queue_pb2.DeleteManyRequest(
            entries=[item("Q1", "delivery-0"), item("Q2", "delivery-1"), item("Q9", "delivery-0")]
        ),
        timeout=10,
    )
    assert list(r.outcomes) == [
        queue_pb2.DELETE_OUTCOME_DELETED,
        queue_pb2.DELETE_OUTCOME_LEASE_NOT_HELD,
        queue_pb2.DELETE_OUTCOME_NOT_FOUND,
    ]
    listed = await queue.List(queue_pb2.ListQueueRequest(), timeout=10)
    assert [e.queue_id for e in listed.entries] == ["Q2"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.DeleteMany(queue_pb2.DeleteManyRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_stats_and_depth_gauge(
    queue: queue_pb2_grpc.DeliveryQueueServiceStub, app: StoreApp
) -> None:
    for n in range(5):
        await queue.Enqueue(
            enqueue_request(recipient=events_pb2.Recipient(address=f"r{n}@example.net")),
            timeout=10,
        )
    first = await queue.List(queue_pb2.ListQueueRequest(page_size=3), timeout=10)
    assert len(first.entries) == 3 and first.next_page_token
    rest = await queue.List(
        queue_pb2.ListQueueRequest(page_size=3, page_token=first.next_page_token), timeout=10
    )
    assert len(rest.entries) == 2 and rest.next_page_token == ""
    names = [e.recipient.address for e in [*first.entries, *rest.entries]]
    assert names == [f"r{n}@example.net" for n in range(5)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await queue.List(queue_pb2.ListQueueRequest(page_token="{"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    await queue.ClaimDue(
        queue_pb2.ClaimDueRequest(owner="d", max_items=2, lease_seconds=60), timeout=10
    )
    stats = await queue.Stats(queue_pb2.QueueStatsRequest(), timeout=10)
    assert (stats.entries, stats.due, stats.leased) == (5, 3, 2)
    assert stats.oldest_created_at_ms > 0
    await app.queue.depth.refresh()
    assert REGISTRY.get_sample_value("postmesh_store_deferred_queue_depth") == 5


async def test_maildrop_lock_service(ch: grpc.aio.Channel) -> None:
    locks = queue_pb2_grpc.MaildropLockServiceStub(ch)

    def req(owner: str) -> queue_pb2.MaildropLockRequest:
        return queue_pb2.MaildropLockRequest(
            user="alice@example.com", owner=owner, lease_seconds=60
        )

    first = await locks.Acquire(req("s1"), timeout=10)
    assert first.granted and first.holder == "s1"
    second = await locks.Acquire(req("s2"), timeout=10)
    assert (second.granted, second.holder, second.expires_at_ms) == (
        False, "s1", first.expires_at_ms,
    )  # fmt: skip
    assert (await locks.Renew(req("s1"), timeout=10)).granted
    assert not (await locks.Renew(req("s2"), timeout=10)).granted
    assert not (await locks.Release(req("s2"), timeout=10)).released
    assert (await locks.Release(req("s1"), timeout=10)).released
    assert (await locks.Acquire(req("s2"), timeout=10)).granted
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await locks.Acquire(queue_pb2.MaildropLockRequest(user="u", owner="s"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # lease_seconds 0


async def test_open_maildrop_lists_under_the_lock(app: StoreApp, ch: grpc.aio.Channel) -> None:
    """ADR 0057: the lock and, once granted, the mailbox's listing in one call."""
    user = "alice@example.com"
    for i in range(3):
        await app.repo.deliver(
            Delivery(f"Q{i}", user, "INBOX", CONTENT + b"%d\r\n" % i, None, ("\\Seen",) * i, 0)
        )
    box = await app.repo.get_mailbox(user, "INBOX")
    locks = queue_pb2_grpc.MaildropLockServiceStub(ch)

    def req(owner: str, mailbox: str = "INBOX", limit: int = 2) -> queue_pb2.OpenMaildropRequest:
        lock = queue_pb2.MaildropLockRequest(user=user, owner=owner, lease_seconds=60)
        return queue_pb2.OpenMaildropRequest(lock=lock, mailbox=mailbox, limit=limit)

    first = await locks.OpenMaildrop(req("s1"), timeout=10)
    assert first.lock.granted and first.lock.holder == "s1"
    assert first.mailbox_found and first.uidvalidity == box.uidvalidity
    # The first page only (limit 2), as ListMessages would give it.
    assert [m.uid for m in first.page.messages] == [1, 2] and first.page.more
    assert [len(m.flags) for m in first.page.messages] == [0, 1]
    assert first.page.messages[0].size == len(CONTENT) + 3
    # Held: the next session gets the holder and no listing.
    second = await locks.OpenMaildrop(req("s2"), timeout=10)
    assert (second.lock.granted, second.lock.holder) == (False, "s1")
    assert not second.mailbox_found and not second.page.messages
    assert (await locks.Release(queue_pb2.MaildropLockRequest(user=user, owner="s1"))).released
    # No such mailbox (nothing delivered yet): the lock is held, with an empty listing.
    empty = await locks.OpenMaildrop(req("s3", "Nope"), timeout=10)
    assert empty.lock.granted and not empty.mailbox_found
    assert (await locks.Release(queue_pb2.MaildropLockRequest(user=user, owner="s3"))).released
    # A listing that fails after the lock was granted gives the lock back before the error.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await locks.OpenMaildrop(req("s4", "INBOX/\x00"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await locks.Acquire(req("s5").lock, timeout=10)).granted


async def test_services_report_serving(ch: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(ch)
    for name in ("DeliveryQueueService", "MaildropLockService"):
        resp = await health.Check(
            health_pb2.HealthCheckRequest(service=f"postmesh.api.store.v1.{name}"), timeout=10
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
