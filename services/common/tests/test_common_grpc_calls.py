"""StoreService.Calls (ADR 0051) on a real grpc.aio server: unary calls carried as messages on
one stream answer as the unary calls do, are authorized per carried method, and fall back to
unary calls whenever the stream cannot answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.backend import BackendUnavailable
from postmesh.common.dev_pki import ServiceCert, ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.grpc_calls import GROUP_BYTES
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.store_client.calls import CallStream, NotCarried, _Stream
from postmesh.common.store_client.client import StoreClient
from postmesh.common.store_client.errors import MailboxNotFound

SERVICES = ["store", "imap-gw", "smtp-edge", "delivery"]
GET_MAILBOX = "/postmesh.api.store.v1.StoreService/GetMailbox"


class Store(store_pb2_grpc.StoreServiceServicer):
    """GetMailbox answers after ``delay_of(name)`` seconds; "missing" is NOT_FOUND."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def GetMailbox(self, request: Any, context: Any) -> Any:
        if request.mailbox == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such mailbox")
        if request.mailbox == "hang":
            await self.release.wait()
        if request.mailbox.startswith("sleep:"):
            await asyncio.sleep(float(request.mailbox[6:].partition("#")[0]))
        if request.mailbox == "crash":
            raise RuntimeError("boom")
        if request.mailbox.startswith("big:"):  # an answer of that many octets or so
            return store_pb2.MailboxInfo(name="x" * int(request.mailbox[4:].partition("#")[0]))
        return store_pb2.MailboxInfo(name=request.mailbox, uidvalidity=7)

    async def Deliver(self, request: Any, context: Any) -> Any:
        return store_pb2.DeliverResponse(uid=1)

    async def Append(self, requests: Any, context: Any) -> Any:
        """Streamed APPEND only (a store from before AppendSmall): the UID is the size."""
        size = 0
        async for r in requests:
            size += len(r.chunk)
        return store_pb2.AppendResponse(uid=size, uidvalidity=7)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, ServiceCert]:
    return ensure_dev_pki(tmp_path / "pki", SERVICES)


async def serve(security: GrpcSecurity, servicer: Store, *, bare: bool = False) -> Any:
    if bare:  # a plain grpc.aio server: the generated Calls stays unimplemented
        srv = grpc.aio.server()
        store_pb2_grpc.add_StoreServiceServicer_to_server(servicer, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        return srv, port
    g = GrpcServer("127.0.0.1:0", security)
    g.add(store_pb2_grpc.add_StoreServiceServicer_to_server, servicer)
    await g.start([])
    return g, g.port


@pytest.fixture
async def plain() -> AsyncIterator[tuple[Store, int]]:
    servicer = Store()
    g, port = await serve(GrpcSecurity(), servicer)
    yield servicer, port
    servicer.release.set()
    await g.stop(0)


def stream_to(port: int, security: GrpcSecurity, lifetime: float = 30.0) -> CallStream:
    stub = store_pb2_grpc.StoreServiceStub(channel(f"127.0.0.1:{port}", security, "store"))
    return CallStream(stub.Calls, lifetime)


def get_mailbox(name: str) -> store_pb2.GetMailboxRequest:
    return store_pb2.GetMailboxRequest(user="u", mailbox=name)


async def test_answers_statuses_and_many_calls_in_flight(plain: tuple[Store, int]) -> None:
    _, port = plain
    calls = stream_to(port, GrpcSecurity())
    r = await calls.call("GetMailbox", get_mailbox("INBOX"), store_pb2.MailboxInfo, 5)
    assert (r.name, r.uidvalidity) == ("INBOX", 7)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await calls.call("GetMailbox", get_mailbox("missing"), store_pb2.MailboxInfo, 5)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such mailbox")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await calls.call("GetMailbox", get_mailbox("crash"), store_pb2.MailboxInfo, 5)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await calls.call("NoSuchMethod", get_mailbox("x"), store_pb2.MailboxInfo, 5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Answers come back as they finish, each to its own caller.
    names = [f"sleep:{(k % 5) / 100}" for k in range(40)]
    answers = await asyncio.gather(
        *(calls.call("GetMailbox", get_mailbox(n), store_pb2.MailboxInfo, 5) for n in names)
    )
    assert [a.name for a in answers] == names
    await calls.close()


async def test_a_late_answer_is_a_deadline_and_the_stream_goes_on(
    plain: tuple[Store, int],
) -> None:
    _, port = plain
    calls = stream_to(port, GrpcSecurity())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await calls.call("GetMailbox", get_mailbox("sleep:1"), store_pb2.MailboxInfo, 0.1)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    r = await calls.call("GetMailbox", get_mailbox("after"), store_pb2.MailboxInfo, 5)
    assert r.name == "after"
    await calls.close()


async def test_streams_are_replaced_after_their_lifetime(plain: tuple[Store, int]) -> None:
    _, port = plain
    calls = stream_to(port, GrpcSecurity(), lifetime=0.05)
    first = await calls.call("GetMailbox", get_mailbox("a"), store_pb2.MailboxInfo, 5)
    old = calls._stream
    await asyncio.sleep(0.1)
    second = await calls.call("GetMailbox", get_mailbox("b"), store_pb2.MailboxInfo, 5)
    assert (first.name, second.name) == ("a", "b")
    assert old is not None and calls._stream is not old
    # The retired stream was half-closed once its answers were in; the server ended it.
    for _ in range(100):
        if old.reader is not None and old.reader.done():
            break
        await asyncio.sleep(0.01)
    assert old.closed and old.reader is not None and old.reader.done()
    await calls.close()


async def test_a_lost_stream_is_not_an_answer() -> None:
    servicer = Store()
    g, port = await serve(GrpcSecurity(), servicer)
    calls = stream_to(port, GrpcSecurity())
    pending = asyncio.create_task(
        calls.call("GetMailbox", get_mailbox("hang"), store_pb2.MailboxInfo, 5)
    )
    await asyncio.sleep(0.2)
    await g.stop(0)  # the store goes with the call in flight: its outcome is unknown
    with pytest.raises(NotCarried):
        await pending
    # For a moment calls go unary (the typed client makes them: next test).
    with pytest.raises(NotCarried):
        await calls.call("GetMailbox", get_mailbox("x"), store_pb2.MailboxInfo, 5)
    servicer.release.set()
    await calls.close()


async def test_the_client_makes_the_unary_call_when_the_stream_cannot(
    plain: tuple[Store, int],
) -> None:
    _, port = plain
    client = StoreClient(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"), 5, call_stream=True)
    assert client._calls is not None
    assert (await client.get_mailbox("u", "on-stream")).name == "on-stream"
    client._calls._unavailable_until = float("inf")  # as after a lost stream
    await client._calls.close()
    assert (await client.get_mailbox("u", "via-unary")).name == "via-unary"
    with pytest.raises(MailboxNotFound):
        await client.get_mailbox("u", "missing")
    await client.close()


async def test_a_store_without_calls_gets_unary_calls() -> None:
    servicer = Store()
    srv, port = await serve(GrpcSecurity(), servicer, bare=True)
    client = StoreClient(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"), 5, call_stream=True)
    try:
        assert (await client.get_mailbox("u", "INBOX")).uidvalidity == 7
        assert client._calls is not None and not client._calls.supported
        assert (await client.get_mailbox("u", "Sent")).name == "Sent"
    finally:
        await client.close()
        await srv.stop(0)


async def test_each_carried_call_is_authorized_as_its_method(
    pki: dict[str, ServiceCert],
) -> None:
    servicer = Store()
    g, port = await serve(pki["store"].security(), servicer)
    try:
        calls = stream_to(port, pki["imap-gw"].security())
        r = await calls.call("GetMailbox", get_mailbox("INBOX"), store_pb2.MailboxInfo, 5)
        assert r.name == "INBOX"
        # imap-gw may not Deliver: refused as the unary call is, and counted.
        labels = {"method": "/postmesh.api.store.v1.StoreService/Deliver", "caller": "imap-gw"}
        before = REGISTRY.get_sample_value("postmesh_grpc_calls_denied_total", labels) or 0.0
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await calls.call(
                "Deliver", store_pb2.DeliverRequest(user="u"), store_pb2.DeliverResponse, 5
            )
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        after = REGISTRY.get_sample_value("postmesh_grpc_calls_denied_total", labels)
        assert after == before + 1
        # Each carried call is timed under its own method.
        timed = {"method": GET_MAILBOX, "code": "OK"}
        assert (
            REGISTRY.get_sample_value("postmesh_grpc_server_handling_seconds_count", timed) or 0
        ) >= 1
        await calls.close()
        # smtp-edge may not open the stream at all: nothing is answered on it.
        edge = stream_to(port, pki["smtp-edge"].security())
        with pytest.raises(NotCarried):
            await edge.call("GetMailbox", get_mailbox("INBOX"), store_pb2.MailboxInfo, 5)
        await edge.close()
    finally:
        await g.stop(0)


async def test_a_small_append_goes_streamed_to_a_store_without_append_small(
    plain: tuple[Store, int],
) -> None:
    _, port = plain
    client = StoreClient(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"), 5, call_stream=True)

    async def content() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        yield b"body\r\n"

    r = await client.append("u", "INBOX", [], 0, 20, content())
    assert (r.uid, r.uidvalidity) == (20, 7) and not client._small_append
    await client.close()


async def test_a_stopping_server_ends_its_streams_after_the_calls_begun() -> None:
    servicer = Store()
    g, port = await serve(GrpcSecurity(), servicer)
    calls = stream_to(port, GrpcSecurity())
    assert (await calls.call("GetMailbox", get_mailbox("a"), store_pb2.MailboxInfo, 5)).name == "a"
    begun = asyncio.create_task(
        calls.call("GetMailbox", get_mailbox("sleep:0.3"), store_pb2.MailboxInfo, 5)
    )
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await g.stop(10)  # the open stream does not hold the stop for its grace
    assert time.monotonic() - t0 < 5
    assert (await begun).name == "sleep:0.3"  # answered before the stream ended
    await calls.close()


async def test_an_append_lost_with_its_stream_is_not_made_again() -> None:
    class Hanging(Store):
        appended = 0

        async def AppendSmall(self, request: Any, context: Any) -> Any:
            Hanging.appended += 1
            await self.release.wait()
            return store_pb2.AppendResponse(uid=1, uidvalidity=7)

    servicer = Hanging()
    g, port = await serve(GrpcSecurity(), servicer)
    client = StoreClient(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"), 5, call_stream=True)

    async def content() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n\r\nbody\r\n"

    pending = asyncio.create_task(client.append("u", "INBOX", [], 0, 20, content()))
    await asyncio.sleep(0.2)
    await g.stop(0)  # the store may or may not have stored it
    with pytest.raises(BackendUnavailable):
        await pending
    assert Hanging.appended == 1  # and it was not sent again
    servicer.release.set()
    await client.close()


class CountedWrites:
    """The stream call with its messages counted (what the client writes, grouped or not)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[int] = []  # calls carried by each message written

    async def write(self, message: store_pb2.CallRequest) -> None:
        self.messages.append(1 + len(message.more))
        await self.call.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.call, name)

    def __aiter__(self) -> Any:
        return self.call.__aiter__()


def counted(calls: CallStream) -> list[CountedWrites]:
    """Every stream ``calls`` opens from now on, counted."""
    opened: list[CountedWrites] = []
    open_stream = calls._open

    def opening() -> Any:
        opened.append(CountedWrites(open_stream()))
        return opened[-1]

    calls._open = opening
    return opened


async def test_calls_made_while_a_write_is_under_way_go_grouped(plain: tuple[Store, int]) -> None:
    """ADR 72: before the server has said it reads grouped calls, each call is a message of its
    own; after, the calls queued behind a write go in one message, and every answer reaches
    its caller."""
    _, port = plain
    calls = stream_to(port, GrpcSecurity())
    opened = counted(calls)
    names = [f"sleep:0.05#{k}" for k in range(10)]

    def ask(name: str) -> Any:
        return calls.call("GetMailbox", get_mailbox(name), store_pb2.MailboxInfo, 5)

    answers = await asyncio.gather(*(ask(n) for n in names))  # no answer yet while sent
    assert [a.name for a in answers] == names
    (stream,) = opened
    assert stream.messages == [1] * 10
    assert calls._stream is not None and calls._stream.grouping
    names = [f"sleep:0.0{k % 3}#{k}" for k in range(60)]
    answers = await asyncio.gather(*(ask(n) for n in names))
    assert [a.name for a in answers] == names
    assert sum(stream.messages[10:]) == 60
    assert len(stream.messages) - 10 < 60 and max(stream.messages) > 1
    await calls.close()


async def test_answers_are_grouped_only_for_a_caller_that_takes_them(
    plain: tuple[Store, int],
) -> None:
    """A caller from before ADR 72 (no takes_grouped_answers) gets each answer in a message of
    its own, even for calls that came grouped; each says the server reads grouped calls."""
    _, port = plain
    stub = store_pb2_grpc.StoreServiceStub(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"))
    call = stub.Calls()
    first = store_pb2.CallRequest(
        id=1, method="GetMailbox", request=get_mailbox("m1").SerializeToString()
    )
    first.more.extend(
        store_pb2.CallRequest(
            id=k, method="GetMailbox", request=get_mailbox(f"m{k}").SerializeToString()
        )
        for k in range(2, 21)
    )
    await call.write(first)
    await call.done_writing()
    got = [m async for m in call]
    assert sorted(m.id for m in got) == list(range(1, 21))
    assert all(not m.more and m.reads_grouped_calls for m in got)
    assert {store_pb2.MailboxInfo.FromString(m.response).name for m in got} == {
        f"m{k}" for k in range(1, 21)
    }


class FailingWrites:
    """A stream call whose first write is slow and then fails; it never answers."""

    def __init__(self) -> None:
        self.writes = 0
        self.ended = asyncio.Event()

    async def write(self, message: store_pb2.CallRequest) -> None:
        self.writes += 1
        await asyncio.sleep(0.05)
        raise grpc.aio.UsageError("the stream is gone")

    def cancel(self) -> None:
        self.ended.set()

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        await self.ended.wait()
        raise StopAsyncIteration


async def test_calls_queued_behind_a_failed_write_were_never_sent() -> None:
    """Every call queued behind a write that failed is NotCarried and not sent (its caller may
    make it as a unary call), as is the call whose write failed."""
    fake = FailingWrites()
    calls = CallStream(lambda: fake)
    outcomes = await asyncio.gather(
        *(
            calls.call("GetMailbox", get_mailbox(f"m{k}"), store_pb2.MailboxInfo, 5)
            for k in range(5)
        ),
        return_exceptions=True,
    )
    assert all(isinstance(o, NotCarried) and not o.sent for o in outcomes)
    assert fake.writes == 1  # the others were queued behind it, never written
    await calls.close()


async def test_grouped_answers_stay_within_the_group_size(plain: tuple[Store, int]) -> None:
    """Answers ready together go in one message only up to GROUP_BYTES: 40 answers of 200 KB
    (8 MB together, half the channel's message limit) arrive, none in a message much over."""
    _, port = plain
    stub = store_pb2_grpc.StoreServiceStub(channel(f"127.0.0.1:{port}", GrpcSecurity(), "store"))
    call = stub.Calls()

    def big(k: int) -> store_pb2.CallRequest:
        req = get_mailbox(f"big:200000#{k}").SerializeToString()
        return store_pb2.CallRequest(id=k, method="GetMailbox", request=req)

    first = big(1)
    first.takes_grouped_answers = True
    first.more.extend(big(k) for k in range(2, 41))
    await call.write(first)
    await call.done_writing()
    got = [m async for m in call]
    ids = sorted(r.id for m in got for r in (m, *m.more))
    assert ids == list(range(1, 41))
    assert all(m.ByteSize() <= GROUP_BYTES + 64 for m in got)
    assert len(got) < 40  # some did go grouped


def test_grouped_calls_stay_within_the_group_size() -> None:
    """The client's next message takes queued calls up to GROUP_BYTES (the first always), and
    one call a message while the server has not said it reads grouped calls."""
    s = _Stream(None, 0.0)
    loop = asyncio.new_event_loop()
    try:
        queued = [
            (store_pb2.CallRequest(id=k, method="Deliver", request=b"m" * 300_000),
             loop.create_future())
            for k in range(10)
        ]  # fmt: skip
        assert len(s._group(queued)) == 1
        s.grouping = True
        assert len(s._group(queued)) == GROUP_BYTES // 300_010
        huge = [(store_pb2.CallRequest(id=1, request=b"h" * (2 * GROUP_BYTES)), queued[0][1])]
        assert len(s._group(huge + queued)) == 1
    finally:
        loop.close()
