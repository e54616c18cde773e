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
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.store_client.calls import CallStream, NotCarried
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
            await asyncio.sleep(float(request.mailbox[6:]))
        if request.mailbox == "crash":
            raise RuntimeError("boom")
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
