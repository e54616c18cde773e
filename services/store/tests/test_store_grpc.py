"""StoreService over a real gRPC channel: the real server (StoreApp on SQLite and the embedded
bus) on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common import columns, topics
from postmesh.common.bus import BusRecord, create_bus
from postmesh.common.grpc import CHUNK_BYTES, channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store.app import StoreApp
from postmesh.store.settings import StoreSettings

MiB = 1024 * 1024
Kind = events_pb2.MailboxEvent.Kind


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[StoreApp]:
    settings = StoreSettings(
        data_dir=tmp_path, store_listen="127.0.0.1:0", bus="sqlite", grpc_plaintext=True
    )
    app = StoreApp(settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def stub(app: StoreApp) -> AsyncIterator[store_pb2_grpc.StoreServiceStub]:
    ch = channel(f"127.0.0.1:{app.port}", GrpcSecurity(), "store")
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

    # Over GetSmallMessageContent's limits: no data, the caller streams it instead.
    small = store_pb2.GetSmallMessageContentRequest(user="alice@example.com", mailbox="", uid=1)
    assert await stub.GetSmallMessageContent(small, timeout=10) == store_pb2.SmallMessageContent()
    small.max_bytes = 3 * MiB + 16
    assert not (await stub.GetSmallMessageContent(small, timeout=10)).complete  # store's 1 MiB

    box = await stub.GetMailbox(
        store_pb2.GetMailboxRequest(user="alice@example.com", mailbox="inbox"), timeout=10
    )
    assert (box.name, box.messages, box.unseen, box.uidnext, box.uidvalidity) == (
        "INBOX", 1, 1, 2, r.uidvalidity,
    )  # fmt: skip
    listed = await stub.ListMailboxes(
        store_pb2.ListMailboxesRequest(user="alice@example.com"), timeout=10
    )
    assert [b.name for b in listed.mailboxes] == [
        "Archive",
        "Drafts",
        "INBOX",
        "Junk",
        "Sent",
        "Trash",
    ]
    assert list(listed.subscriptions) == [b.name for b in listed.mailboxes]


async def test_small_content_in_one_answer(stub: store_pb2_grpc.StoreServiceStub) -> None:
    # Sizes around a storage chunk's (255 KiB) and the asked limit.
    sizes = [40, 255 * 1024, 255 * 1024 + 1, 600 * 1024]
    contents = [b"Subject: s\r\n\r\n" + random.Random(n).randbytes(n) for n in sizes]
    for i, content in enumerate(contents):
        req = store_pb2.DeliverRequest(queue_id=f"S{i}", user="s@x", content=content)
        await stub.Deliver(req, timeout=10)
    for uid, content in enumerate(contents, 1):
        req = store_pb2.GetSmallMessageContentRequest(user="s@x", mailbox="INBOX", uid=uid)
        got = await stub.GetSmallMessageContent(req, timeout=10)
        assert (got.complete, got.data) == (True, content)
        req.max_bytes = len(content)
        assert (await stub.GetSmallMessageContent(req, timeout=10)).data == content
        req.max_bytes = len(content) - 1
        got = await stub.GetSmallMessageContent(req, timeout=10)
        assert (got.complete, got.data) == (False, b"")


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
    ch = channel(f"127.0.0.1:{app.port}", GrpcSecurity(), "store")
    stub = store_pb2_grpc.StoreServiceStub(ch)
    for i in range(3):
        await stub.Deliver(
            store_pb2.DeliverRequest(queue_id=f"Q{i}", user="u@x", content=b"m%d" % i),
            timeout=10,
        )
    # A redelivery (its first attempt's caller gone before the answer) announces again.
    again = await stub.Deliver(
        store_pb2.DeliverRequest(queue_id="Q1", user="u@x", content=b"m1"), timeout=10
    )
    assert again.duplicate and again.uid == 2
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
        if len(got) >= 12:
            break
        await asyncio.sleep(0.02)
    await reader.stop()
    await asyncio.wait_for(task, 5)
    events = [events_pb2.MailboxEvent.FromString(rec.value) for rec in got]
    assert {rec.key for rec in got} == {"u@x"}
    # Provisioning on the first delivery announces each mailbox it made.
    created = events[:6]
    assert {e.mailbox for e in created} == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert {e.kind for e in created} == {Kind.KIND_MAILBOX_CREATED}
    events = events[6:]
    assert [(e.kind, list(e.uids)) for e in events] == [
        (Kind.KIND_MESSAGE_NEW, [1]),
        (Kind.KIND_MESSAGE_NEW, [2]),
        (Kind.KIND_MESSAGE_NEW, [3]),
        (Kind.KIND_MESSAGE_NEW, [2]),
        (Kind.KIND_FLAGS_CHANGED, [1, 2]),
        (Kind.KIND_MESSAGE_EXPUNGED, [2]),
    ]
    assert events[3].modseq == events[1].modseq  # the redelivered message, as first stored
    assert list(events[4].flags) == ["\\Deleted"]
    assert all(e.mailbox == "INBOX" and e.at_ms > 0 for e in events)
    assert events[5].modseq > events[4].modseq > events[2].modseq > 0


async def aiter_of(items: list[store_pb2.ContentChunk]) -> AsyncIterator[store_pb2.ContentChunk]:
    for item in items:
        yield item


async def test_readiness_reports_backend(app: StoreApp) -> None:
    check = app.readiness_checks()["store-backend"]
    assert await check() is True
    await app.repo.close()
    assert await check() is False


async def read_events(app: StoreApp, at_least: int) -> list[events_pb2.MailboxEvent]:
    got: list[BusRecord] = []
    reader = create_bus(app.settings, "test-reader")
    await reader.start()

    async def collect(rec: BusRecord) -> None:
        got.append(rec)

    task = asyncio.create_task(reader.consume([topics.MAILBOX_EVENTS], None, collect))
    for _ in range(250):
        if len(got) >= at_least:
            break
        await asyncio.sleep(0.02)
    await reader.stop()
    await asyncio.wait_for(task, 5)
    return [events_pb2.MailboxEvent.FromString(rec.value) for rec in got]


async def append_request(
    user: str, mailbox: str, content: bytes, piece: int = 100_000
) -> AsyncIterator[store_pb2.AppendRequest]:
    header = store_pb2.AppendHeader(
        user=user, mailbox=mailbox, flags=["\\Seen"], internal_date=1_700_000_000,
        size=len(content),
    )  # fmt: skip
    yield store_pb2.AppendRequest(header=header)
    for i in range(0, len(content), piece):
        yield store_pb2.AppendRequest(chunk=content[i : i + piece])


async def test_provision_without_listing_over_grpc(
    app: StoreApp, stub: store_pb2_grpc.StoreServiceStub
) -> None:
    fresh = await stub.ProvisionUser(
        store_pb2.ProvisionUserRequest(user="fresh@x", without_listing=True), timeout=10
    )
    assert (list(fresh.mailboxes), list(fresh.subscriptions)) == ([], [])
    listed = await stub.ListMailboxes(store_pb2.ListMailboxesRequest(user="fresh@x"), timeout=10)
    assert "Sent" in [b.name for b in listed.mailboxes] and "Sent" in listed.subscriptions


async def test_mailbox_model_over_grpc(
    app: StoreApp, stub: store_pb2_grpc.StoreServiceStub
) -> None:
    user = "m@x"
    prov = await stub.ProvisionUser(store_pb2.ProvisionUserRequest(user=user), timeout=10)
    specials = {b.name: b.special_use for b in prov.mailboxes}
    assert specials["Sent"] == "\\Sent" and specials["INBOX"] == ""
    # What a login asks: the user exists, no listing (ADR 60).
    bare = await stub.ProvisionUser(
        store_pb2.ProvisionUserRequest(user=user, without_listing=True), timeout=10
    )
    assert (list(bare.mailboxes), list(bare.subscriptions)) == ([], [])
    created = await stub.CreateMailbox(
        store_pb2.CreateMailboxRequest(user=user, mailbox="Lists/pm", special_use="\\Archive"),
        timeout=10,
    )
    assert (created.name, created.special_use, created.uidnext) == ("Lists/pm", "\\Archive", 1)
    await stub.SetSubscription(
        store_pb2.SetSubscriptionRequest(user=user, mailbox="Ghost", subscribed=True), timeout=10
    )
    listed = await stub.ListMailboxes(store_pb2.ListMailboxesRequest(user=user), timeout=10)
    assert "Ghost" in listed.subscriptions
    assert [b.has_children for b in listed.mailboxes if b.name == "Lists"] == [True]

    content = b"Subject: appended\r\nFrom: a@example.org\r\n\r\n" + random.Random(3).randbytes(
        300_000
    )
    app_r = await stub.Append(append_request(user, "Lists/pm", content), timeout=10)
    assert (app_r.uid, app_r.uidvalidity) == (1, created.uidvalidity)
    meta = await stub.GetMessageMeta(
        store_pb2.GetMessageMetaRequest(user=user, mailbox="Lists/pm", uids=[1, 5]), timeout=10
    )
    assert [(m.uid, m.envelope.subject) for m in meta.messages] == [(1, "appended")]
    found = await stub.Search(
        store_pb2.SearchRequest(
            user=user, mailbox="Lists/pm",
            criteria=store_pb2.SearchKey(header=store_pb2.HeaderMatch(name="Subject", value="APP")),
        ),
        timeout=10,
    )  # fmt: skip
    box = await stub.GetMailbox(
        store_pb2.GetMailboxRequest(user=user, mailbox="Lists/pm"), timeout=10
    )
    assert (list(found.uids), found.highest_modseq) == ([1], box.highestmodseq)
    copy = await stub.CopyMessages(
        store_pb2.CopyMessagesRequest(user=user, mailbox="Lists/pm", uids=[1], destination="INBOX"),
        timeout=10,
    )
    assert (list(copy.source_uids), list(copy.destination_uids)) == ([1], [1])
    inbox = await stub.GetMailbox(
        store_pb2.GetMailboxRequest(user=user, mailbox="INBOX"), timeout=10
    )
    moved = await stub.MoveMessages(
        store_pb2.CopyMessagesRequest(user=user, mailbox="INBOX", uids=[1], destination="Archive"),
        timeout=10,
    )
    assert (list(moved.destination_uids), list(moved.expunged_uids)) == ([1], [1])
    changes = await stub.GetChanges(
        store_pb2.GetChangesRequest(user=user, mailbox="INBOX", since_modseq=inbox.highestmodseq),
        timeout=10,
    )
    assert (list(changes.expunged_uids), changes.uidvalidity) == ([1], inbox.uidvalidity)
    flags = await stub.StoreFlags(
        store_pb2.StoreFlagsRequest(
            user=user, mailbox="Archive", uids=[1], mode=store_pb2.FLAGS_MODE_ADD,
            flags=["\\Flagged"], unchanged_since=1,
        ),
        timeout=10,
    )  # fmt: skip
    assert (list(flags.modified), list(flags.updated)) == ([1], [])
    quota = await stub.SetQuota(
        store_pb2.SetQuotaRequest(user=user, storage_limit_bytes=1000, message_limit=10), timeout=10
    )
    assert (quota.storage_used_bytes, quota.messages_used) == (2 * len(content), 2)
    renamed = await stub.RenameMailbox(
        store_pb2.RenameMailboxRequest(user=user, mailbox="Lists", new_name="Groups"), timeout=10
    )
    assert renamed.name == "Groups"
    deleted = await stub.DeleteMailbox(
        store_pb2.DeleteMailboxRequest(user=user, mailbox="Groups/pm"), timeout=10
    )
    assert deleted.messages_deleted == 1

    raw_events = await read_events(app, 15)
    events = [(e.kind, e.mailbox, list(e.uids)) for e in raw_events]
    assert [(e.mailbox, e.new_name) for e in raw_events if e.new_name] == [
        ("Lists", "Groups"),
        ("Lists/pm", "Groups/pm"),
    ]
    assert events[6:] == [
        (Kind.KIND_MAILBOX_CREATED, "Lists", []),
        (Kind.KIND_MAILBOX_CREATED, "Lists/pm", []),
        (Kind.KIND_MESSAGE_NEW, "Lists/pm", [1]),
        (Kind.KIND_MESSAGE_NEW, "INBOX", [1]),
        (Kind.KIND_MESSAGE_NEW, "Archive", [1]),
        (Kind.KIND_MESSAGE_EXPUNGED, "INBOX", [1]),
        (Kind.KIND_MAILBOX_RENAMED, "Lists", []),
        (Kind.KIND_MAILBOX_RENAMED, "Lists/pm", []),
        (Kind.KIND_MAILBOX_DELETED, "Groups/pm", []),
    ]


async def test_list_message_flags_over_grpc(stub: store_pb2_grpc.StoreServiceStub) -> None:
    user = "flags@example.com"
    for i in range(5):
        flags = ["\\Seen"] if i % 2 else []
        req = store_pb2.DeliverRequest(
            queue_id=f"F{i}", user=user, content=b"Subject: %d\r\n\r\nx" % i, flags=flags
        )
        await stub.Deliver(req, timeout=10)
    listing = await stub.ListMessages(
        store_pb2.ListMessagesRequest(user=user, mailbox="INBOX"), timeout=10
    )
    page = await stub.ListMessageFlags(
        store_pb2.ListMessagesRequest(user=user, mailbox="INBOX"), timeout=10
    )
    assert not page.more
    assert list(page.uids) == [m.uid for m in listing.messages] == [1, 2, 3, 4, 5]
    assert list(page.modseqs) == [m.modseq for m in listing.messages]
    sets = [tuple(s.flags) for s in page.flag_sets]
    assert [sets[i] for i in page.flag_set_index] == [tuple(m.flags) for m in listing.messages]
    assert sorted(sets) == [(), ("\\Seen",)]
    # The same page as byte columns, for a client that asks (ADR 0075), twice: from SQLite,
    # then from the listing cache.
    for _ in range(2):
        packed = await stub.ListMessageFlags(
            store_pb2.ListMessagesRequest(user=user, mailbox="INBOX", packed_columns=True),
            timeout=10,
        )
        assert not (packed.uids or packed.modseqs or packed.flag_set_index)
        assert list(columns.unpack(columns.U32, packed.uids_le32)) == list(page.uids)
        assert list(columns.unpack(columns.U64, packed.modseqs_le64)) == list(page.modseqs)
        index = columns.unpack(columns.U32, packed.flag_set_index_le32)
        assert list(index) == list(page.flag_set_index)
        assert packed.uids_le32[:8] == b"\x01\x00\x00\x00\x02\x00\x00\x00"  # little-endian
        assert [tuple(s.flags) for s in packed.flag_sets] == sets
    second = await stub.ListMessageFlags(
        store_pb2.ListMessagesRequest(user=user, mailbox="INBOX", after_uid=1, limit=2), timeout=10
    )
    assert (list(second.uids), second.more) == ([2, 3], True)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListMessageFlags(
            store_pb2.ListMessagesRequest(user=user, mailbox="Nope"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_get_message_contents_streams_several_in_order_and_reports_missing(
    stub: store_pb2_grpc.StoreServiceStub,
) -> None:
    user = "carol@example.com"
    big = b"Subject: big\r\n\r\n" + random.Random(3).randbytes(CHUNK_BYTES + 100)
    contents = [b"Subject: one\r\n\r\nx\r\n", big, b"Subject: three\r\n\r\n"]
    for i, content in enumerate(contents):
        req = store_pb2.DeliverRequest(queue_id=f"C{i}", user=user, content=content)
        assert (await stub.Deliver(req, timeout=10)).uid == i + 1
    # 9 never existed; asked out of UID order, answered in the order asked.
    call = stub.GetMessageContents(
        store_pb2.GetMessageContentsRequest(user=user, mailbox="INBOX", uids=[2, 9, 1, 3]),
        timeout=10,
    )
    responses = [r async for r in call]
    chunks = [(p.uid, p.data, p.last, p.missing) for r in responses for p in r.parts]
    # The first response goes out at once; later ones pack several parts (up to CHUNK_BYTES).
    assert len(responses[0].parts) == 1 and len(responses) < len(chunks)
    got: dict[int, bytes] = {}
    order: list[int] = []
    for uid, data, last, missing in chunks:
        if not order or order[-1] != uid:
            order.append(uid)
        got[uid] = got.get(uid, b"") + data
        assert not missing or (last and not data)
    assert order == [2, 9, 1, 3]
    assert [c[0] for c in chunks if c[2]] == [2, 9, 1, 3]  # one last chunk per message
    assert [c[0] for c in chunks if c[3]] == [9]
    assert (got[1], got[2], got[3]) == tuple(contents)
    assert sum(1 for c in chunks if c[0] == 2) == 2  # the big one in two chunks

    # A mailbox that does not exist: every message is missing, the call does not fail.
    call = stub.GetMessageContents(
        store_pb2.GetMessageContentsRequest(user=user, mailbox="Nope", uids=[1]), timeout=10
    )
    assert [(p.uid, p.missing) async for r in call for p in r.parts] == [(1, True)]

    too_many = store_pb2.GetMessageContentsRequest(user=user, uids=list(range(1, 1002)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await read_all(stub.GetMessageContents(too_many, timeout=10))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_message_contents_packs_four_times_the_previous_response(
    stub: store_pb2_grpc.StoreServiceStub,
) -> None:
    """The first response holds the first message (the caller waits for it); each next one
    four times what the previous one held, up to 4 x CHUNK_BYTES: few responses per call
    (ADR 42), and the wire-form bit on each message's last part. What one database read
    brought goes out before the next read (ADR 52): SQLite reads 2, 4, 8, 16, 32 messages a
    trip, so the 8-message read (65 KB, under the 130 KB mark) is a response of its own."""
    user = "dave@example.com"
    line = b"0123456789" * 10 + b"\r\n"
    clean = [b"Subject: m%d\r\n\r\n" % i + line * 80 for i in range(60)]  # ~8 KiB each
    for i, content in enumerate(clean):
        req = store_pb2.DeliverRequest(queue_id=f"P{i}", user=user, content=content)
        await stub.Deliver(req, timeout=10)
    dotted = b"Subject: dot\r\n\r\n.x\r\n"
    req = store_pb2.DeliverRequest(queue_id="P60", user=user, content=dotted)
    await stub.Deliver(req, timeout=10)
    call = stub.GetMessageContents(
        store_pb2.GetMessageContentsRequest(user=user, mailbox="INBOX", uids=range(1, 62)),
        timeout=10,
    )
    responses = [r async for r in call]
    # 1 (first), 1 (end of the first read), 4 (32 KB = 4 x 8 KB), 8 (end of a read),
    # 16 (130 KB = 4 x 32 KB, also the end of a read), the rest.
    assert [len(r.parts) for r in responses] == [1, 1, 4, 8, 16, 31]
    parts = [p for r in responses for p in r.parts]
    assert [p.data for p in parts] == [*clean, dotted]
    assert [p.wire_ready for p in parts] == [True] * 60 + [False]


async def test_append_small_stores_as_append_does(
    app: StoreApp, stub: store_pb2_grpc.StoreServiceStub
) -> None:
    """ADR 0051: a whole small message in one request, stored and announced as by Append."""
    await stub.ProvisionUser(store_pb2.ProvisionUserRequest(user="a@example.com"), timeout=10)
    content = b"Subject: small\r\n\r\nhello\r\n"

    def request(mailbox: str, data: bytes, size: int = 0) -> store_pb2.AppendSmallRequest:
        header = store_pb2.AppendHeader(
            user="a@example.com", mailbox=mailbox, flags=["\\Seen"], size=size or len(data)
        )
        return store_pb2.AppendSmallRequest(header=header, content=data)

    r = await stub.AppendSmall(request("INBOX", content), timeout=10)
    assert r.uid == 1 and r.uidvalidity > 0
    # The new message's MODSEQ and stored flags (ADR 0064): the mailbox's HIGHESTMODSEQ now.
    box = await app.repo.get_mailbox("a@example.com", "INBOX")
    assert r.modseq == box.highestmodseq > 0 and list(r.flags) == ["\\Seen"]
    get = store_pb2.GetMessageContentRequest(user="a@example.com", mailbox="INBOX", uid=r.uid)
    assert b"".join(await read_all(stub.GetMessageContent(get, timeout=10))) == content
    (m,) = (await app.repo.list_messages("a@example.com", "INBOX", 0, 10))[0]
    assert m.flags == ("\\Seen",)
    for req, code in (
        (request("Nope", content), grpc.StatusCode.NOT_FOUND),
        (request("INBOX", content, size=len(content) + 1), grpc.StatusCode.INVALID_ARGUMENT),
        (request("INBOX", b"x" * (CHUNK_BYTES + 1)), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.AppendSmall(req, timeout=10)
        assert e.value.code() == code
    assert len((await app.repo.list_messages("a@example.com", "INBOX", 0, 10))[0]) == 1
    # The quota is checked in the transaction that stores it (no check before: ADR 0051).
    await app.repo.set_quota("a@example.com", len(content) + 10, 0)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.AppendSmall(request("INBOX", content), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len((await app.repo.list_messages("a@example.com", "INBOX", 0, 10))[0]) == 1
