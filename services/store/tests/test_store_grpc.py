"""StoreService over a real gRPC channel: the real server (StoreApp on SQLite and the embedded
bus) on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common import topics
from postmesh.common.bus import BusRecord, create_bus
from postmesh.common.grpc import CHUNK_BYTES, channel
from postmesh.store.app import StoreApp
from postmesh.store.settings import StoreSettings

MiB = 1024 * 1024
Kind = events_pb2.MailboxEvent.Kind


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[StoreApp]:
    settings = StoreSettings(data_dir=tmp_path, store_listen="127.0.0.1:0", bus="sqlite")
    app = StoreApp(settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def stub(app: StoreApp) -> AsyncIterator[store_pb2_grpc.StoreServiceStub]:
    ch = channel(f"127.0.0.1:{app.port}")
    yield store_pb2_grpc.StoreServiceStub(ch)
    await ch.close()


def deliveries(result: str) -> float:
    return REGISTRY.get_sample_value("postmesh_store_deliveries_total", {"result": result}) or 0.0


async def read_all(call: grpc.aio.UnaryStreamCall) -> list[bytes]:
    return [c.data async for c in call]


async def test_deliver_list_and_stream_3mib(stub: store_pb2_grpc.StoreServiceStub) -> None:
    content = b"Subject: big\r\n\r\n" + random.Random(1).randbytes(3 * MiB)
    new_before, dup_before = deliveries("new"), deliveries("duplicate")
    req = store_pb2.DeliverRequest(queue_id="Q1", user="alice@example.com", content=content)
    r = await stub.Deliver(req, timeout=10)
    assert (r.uid, r.mailbox, r.duplicate) == (1, "INBOX", False) and r.uidvalidity > 0
    again = await stub.Deliver(req, timeout=10)
    assert (again.uid, again.uidvalidity, again.duplicate) == (1, r.uidvalidity, True)
    assert (deliveries("new") - new_before, deliveries("duplicate") - dup_before) == (1, 1)

    page = await stub.ListMessages(
        store_pb2.ListMessagesRequest(user="alice@example.com", mailbox="INBOX"), timeout=10
    )
    assert not page.more
    (summary,) = page.messages
    assert (summary.uid, summary.size) == (1, len(content))
    assert summary.blob_id == hashlib.sha256(content).hexdigest()

    chunks = await read_all(
        stub.GetMessageContent(
            store_pb2.GetMessageContentRequest(user="alice@example.com", mailbox="", uid=1),
            timeout=10,
        )
    )
    assert b"".join(chunks) == content
    assert all(len(c) == CHUNK_BYTES for c in chunks[:-1]) and 0 < len(chunks[-1]) <= CHUNK_BYTES

    box = await stub.GetMailbox(
        store_pb2.GetMailboxRequest(user="alice@example.com", mailbox="inbox"), timeout=10
    )
    assert (box.name, box.messages, box.unseen, box.uidnext, box.uidvalidity) == (
        "INBOX", 1, 1, 2, r.uidvalidity,
    )  # fmt: skip
    listed = await stub.ListMailboxes(
        store_pb2.ListMailboxesRequest(user="alice@example.com"), timeout=10
    )
    assert [b.name for b in listed.mailboxes] == ["INBOX"]


async def test_put_blob_deliver_and_get_blob(stub: store_pb2_grpc.StoreServiceStub) -> None:
    content = random.Random(2).randbytes(5 * MiB + 17)

    async def upload() -> AsyncIterator[store_pb2.ContentChunk]:
        for i in range(0, len(content), CHUNK_BYTES):
            yield store_pb2.ContentChunk(data=content[i : i + CHUNK_BYTES])

    put = await stub.PutBlob(upload(), timeout=10)
    assert (put.blob_id, put.size) == (hashlib.sha256(content).hexdigest(), len(content))
    for user in ("a@x", "b@x"):
        r = await stub.Deliver(
            store_pb2.DeliverRequest(queue_id="Q2", user=user, blob_id=put.blob_id), timeout=10
        )
        assert r.uid == 1
        got = await read_all(
            stub.GetMessageContent(store_pb2.GetMessageContentRequest(user=user, uid=1), timeout=10)
        )
        assert b"".join(got) == content
    blob = await read_all(stub.GetBlob(store_pb2.GetBlobRequest(blob_id=put.blob_id), timeout=10))
    assert b"".join(blob) == content


async def test_flags_expunge_and_events(app: StoreApp, tmp_path: Path) -> None:
    ch = channel(f"127.0.0.1:{app.port}")
    stub = store_pb2_grpc.StoreServiceStub(ch)
    for i in range(3):
        await stub.Deliver(
            store_pb2.DeliverRequest(queue_id=f"Q{i}", user="u@x", content=b"m%d" % i),
            timeout=10,
        )
    r = await stub.StoreFlags(
        store_pb2.StoreFlagsRequest(
            user="u@x", uids=[1, 2], mode=store_pb2.FLAGS_MODE_ADD, flags=["\\deleted"]
        ),
        timeout=10,
    )
    assert [(m.uid, list(m.flags)) for m in r.updated] == [(1, ["\\Deleted"]), (2, ["\\Deleted"])]
    ex = await stub.Expunge(store_pb2.ExpungeRequest(user="u@x", uids=[2, 3]), timeout=10)
    assert list(ex.expunged_uids) == [2]
    await ch.close()

    # The events, read back from the bus the service published them on.
    got: list[BusRecord] = []
    reader = create_bus(app.settings, "test-reader")
    await reader.start()

    async def collect(rec: BusRecord) -> None:
        got.append(rec)

    task = asyncio.create_task(reader.consume([topics.MAILBOX_EVENTS], None, collect))
    for _ in range(200):
        if len(got) >= 6:
            break
        await asyncio.sleep(0.02)
    await reader.stop()
    await asyncio.wait_for(task, 5)
    events = [events_pb2.MailboxEvent.FromString(rec.value) for rec in got]
    assert {rec.key for rec in got} == {"u@x"}
    assert [(e.kind, list(e.uids)) for e in events] == [
        (Kind.KIND_MAILBOX_CREATED, []),
        (Kind.KIND_MESSAGE_NEW, [1]),
        (Kind.KIND_MESSAGE_NEW, [2]),
        (Kind.KIND_MESSAGE_NEW, [3]),
        (Kind.KIND_FLAGS_CHANGED, [1, 2]),
        (Kind.KIND_MESSAGE_EXPUNGED, [2]),
    ]
    assert list(events[4].flags) == ["\\Deleted"]
    assert all(e.mailbox == "INBOX" and e.at_ms > 0 for e in events)
    assert events[5].modseq > events[4].modseq > events[3].modseq > 0


async def test_errors_are_status_codes(stub: store_pb2_grpc.StoreServiceStub) -> None:
    async def code(call: object) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            if isinstance(call, grpc.aio.UnaryStreamCall):
                await read_all(call)
            else:
                await call  # type: ignore[misc]
        return err.value.code()  # type: ignore[no-any-return]

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    not_found = grpc.StatusCode.NOT_FOUND
    await stub.Deliver(store_pb2.DeliverRequest(queue_id="Q0", user="u", content=b"x"), timeout=10)

    def deliver(**kw: Any) -> store_pb2.DeliverRequest:
        return store_pb2.DeliverRequest(**{"queue_id": "Q", "user": "u", **kw})

    seen = ["\\Seen"]
    add = store_pb2.FLAGS_MODE_ADD
    cases: list[tuple[Callable[[], object], grpc.StatusCode]] = [
        (lambda: stub.Deliver(deliver(user="", content=b"x")), invalid),
        (lambda: stub.Deliver(deliver(content=b"")), invalid),
        (lambda: stub.Deliver(deliver()), invalid),
        (lambda: stub.Deliver(deliver(blob_id="f" * 64)), invalid),
        (lambda: stub.Deliver(deliver(mailbox="a//b", content=b"x")), invalid),
        (lambda: stub.Deliver(deliver(mailbox="Nope", content=b"x")), not_found),
        (lambda: stub.GetMailbox(store_pb2.GetMailboxRequest(user="u", mailbox="Nope")), not_found),
        (lambda: stub.ListMessages(store_pb2.ListMessagesRequest(user="")), invalid),
        (
            lambda: stub.GetMessageContent(store_pb2.GetMessageContentRequest(user="u", uid=9)),
            not_found,
        ),
        (lambda: stub.GetBlob(store_pb2.GetBlobRequest(blob_id="e" * 64)), not_found),
        (lambda: stub.GetBlob(store_pb2.GetBlobRequest(blob_id="../etc")), invalid),
        (
            lambda: stub.StoreFlags(store_pb2.StoreFlagsRequest(user="u", uids=[1], flags=seen)),
            invalid,
        ),
        (
            lambda: stub.StoreFlags(
                store_pb2.StoreFlagsRequest(user="u", uids=[1], mode=add, flags=["\\Recent"])
            ),
            invalid,
        ),
        (lambda: stub.Expunge(store_pb2.ExpungeRequest(user="u", mailbox="Nope")), not_found),
        (lambda: stub.PutBlob(aiter_of([])), invalid),
    ]
    for i, (call, expected) in enumerate(cases):
        assert (i, await code(call())) == (i, expected)


async def aiter_of(items: list[store_pb2.ContentChunk]) -> AsyncIterator[store_pb2.ContentChunk]:
    for item in items:
        yield item


async def test_readiness_reports_backend(app: StoreApp) -> None:
    check = app.readiness_checks()["store-backend"]
    assert await check() is True
    await app.repo.close()
    assert await check() is False
