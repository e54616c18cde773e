"""The real backend (GrpcBackend) against in-process StoreService/AuthService fakes over gRPC on
127.0.0.1, and one whole poplib session through it."""

from __future__ import annotations

import asyncio
import poplib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc, store_pb2, store_pb2_grpc
from postmesh.common.backend import BackendUnavailable
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.pop3_gw.backend import LockResult, MessageGone
from postmesh.pop3_gw.grpc_backend import GrpcBackend, StoreMaildrop
from postmesh.pop3_gw.server import Pop3Service
from postmesh.pop3_gw.settings import Pop3Settings
from postmesh.store.in_process import InProcessStore

USER = "carol@example.test"
PASSWORD = "pw-carol"


@dataclass
class StoreState:
    messages: dict[int, tuple[bytes, set[str]]] = field(default_factory=dict)
    has_inbox: bool = True
    fail: set[str] = field(default_factory=set)
    requests: list[tuple[str, Any]] = field(default_factory=list)


class FakeStore(store_pb2_grpc.StoreServiceServicer):  # type: ignore[misc]
    def __init__(self, state: StoreState) -> None:
        self.s = state

    async def _check(self, name: str, context: Any) -> None:
        if name in self.s.fail:
            await context.abort(grpc.StatusCode.INTERNAL, "injected failure")

    async def GetMailbox(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("GetMailbox", (request.user, request.mailbox)))
        await self._check("GetMailbox", context)
        if not self.s.has_inbox:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no mailbox")
        return store_pb2.MailboxInfo(name="INBOX", uidvalidity=777, messages=len(self.s.messages))

    async def ListMessages(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("ListMessages", (request.after_uid, request.limit)))
        await self._check("ListMessages", context)
        uids = sorted(u for u in self.s.messages if u > request.after_uid)
        page = uids[: request.limit]
        return store_pb2.ListMessagesResponse(
            messages=[
                store_pb2.MessageSummary(
                    uid=u, size=len(self.s.messages[u][0]), flags=sorted(self.s.messages[u][1])
                )
                for u in page
            ],
            more=len(uids) > len(page),
        )

    async def GetMessageContent(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.s.requests.append(("GetMessageContent", request.uid))
        await self._check("GetMessageContent", context)
        if request.uid not in self.s.messages:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such message")
        data = self.s.messages[request.uid][0]
        for i in range(0, len(data), 10):
            yield store_pb2.ContentChunk(data=data[i : i + 10])

    async def StoreFlags(self, request: Any, context: Any) -> Any:
        self.s.requests.append(
            ("StoreFlags", (list(request.uids), request.mode, list(request.flags)))
        )
        await self._check("StoreFlags", context)
        for uid in request.uids:
            if uid in self.s.messages:
                flags = self.s.messages[uid][1]
                if request.mode == store_pb2.FLAGS_MODE_ADD:
                    flags.update(request.flags)
                elif request.mode == store_pb2.FLAGS_MODE_REMOVE:
                    flags.difference_update(request.flags)
        return store_pb2.StoreFlagsResponse()

    async def Expunge(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("Expunge", list(request.uids)))
        await self._check("Expunge", context)
        gone = [u for u in request.uids if "\\Deleted" in self.s.messages.get(u, (b"", set()))[1]]
        for uid in gone:
            del self.s.messages[uid]
        return store_pb2.ExpungeResponse(expunged_uids=gone)


class FakeLocks(queue_pb2_grpc.MaildropLockServiceServicer):  # type: ignore[misc]
    """Maildrop locks without expiry (expiry is the store's contract suite's business)."""

    def __init__(self, state: StoreState) -> None:
        self.s = state
        self.holders: dict[str, str] = {}

    async def Acquire(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("Acquire", (request.user, request.lease_seconds)))
        await self._check("Acquire", context)
        holder = self.holders.setdefault(request.user, request.owner)
        return queue_pb2.MaildropLockResponse(granted=holder == request.owner, holder=holder)

    async def Renew(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("Renew", request.user))
        await self._check("Renew", context)
        granted = self.holders.get(request.user) == request.owner
        return queue_pb2.MaildropLockResponse(granted=granted)

    async def Release(self, request: Any, context: Any) -> Any:
        self.s.requests.append(("Release", request.user))
        await self._check("Release", context)
        released = self.holders.get(request.user) == request.owner
        if released:
            del self.holders[request.user]
        return queue_pb2.ReleaseMaildropLockResponse(released=released)

    async def _check(self, name: str, context: Any) -> None:
        if name in self.s.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.fail = False

    async def Authenticate(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if self.fail:
            await context.abort(grpc.StatusCode.INTERNAL, "injected failure")
        if request.username.lower() == USER and request.password == PASSWORD:
            return auth_pb2.AuthenticateResponse(ok=True, user=USER)
        return auth_pb2.AuthenticateResponse(ok=False, reason="invalid credentials")


@dataclass
class Grpc:
    store: StoreState
    auth: FakeAuth
    address: str


@pytest.fixture
async def fakes() -> AsyncIterator[Grpc]:
    state = StoreState()
    auth = FakeAuth()
    server = grpc.aio.server()
    store_pb2_grpc.add_StoreServiceServicer_to_server(FakeStore(state), server)
    queue_pb2_grpc.add_MaildropLockServiceServicer_to_server(FakeLocks(state), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Grpc(state, auth, f"127.0.0.1:{port}")
    await server.stop(0)


@pytest.fixture
async def backend(fakes: Grpc) -> AsyncIterator[GrpcBackend]:
    b = GrpcBackend(
        fakes.address, fakes.address, deadline=5.0, page_size=2, security=GrpcSecurity()
    )
    yield b
    await b.close()


async def test_authenticate(fakes: Grpc, backend: GrpcBackend) -> None:
    assert (
        await backend.check_password(
            "Carol@Example.test", PASSWORD, remote_ip="127.0.0.1", mechanism="PLAIN"
        )
    ).user == USER
    bad = await backend.check_password(USER, "nope", remote_ip="127.0.0.1", mechanism="")
    assert bad.user is None and bad.retry_after == 0
    req = fakes.auth.requests[0]
    assert (req.protocol, req.remote_ip, req.mechanism) == ("pop3", "127.0.0.1", "PLAIN")
    fakes.auth.fail = True
    with pytest.raises(BackendUnavailable):
        await backend.check_password(USER, PASSWORD, remote_ip="127.0.0.1", mechanism="")


async def test_open_maildrop_pages_through_the_inbox(fakes: Grpc, backend: GrpcBackend) -> None:
    for uid in (3, 5, 8, 9, 12):
        fakes.store.messages[uid] = (f"msg {uid}\r\n".encode(), {"\\Seen"} if uid == 5 else set())
    drop = await backend.open_maildrop(USER)
    assert drop.uidvalidity == 777
    assert [m.uid for m in drop.messages] == [3, 5, 8, 9, 12]
    assert drop.messages[1].flags == frozenset({"\\Seen"})
    assert drop.messages[0].size == len(b"msg 3\r\n")
    pages = [r[1] for r in fakes.store.requests if r[0] == "ListMessages"]
    assert pages == [(0, 2), (5, 2), (9, 2)]
    assert ("GetMailbox", (USER, "INBOX")) in fakes.store.requests


async def test_open_maildrop_without_inbox_is_empty(fakes: Grpc, backend: GrpcBackend) -> None:
    fakes.store.has_inbox = False
    drop = await backend.open_maildrop(USER)
    assert drop.messages == ()


async def test_open_maildrop_failure_is_temporary(fakes: Grpc, backend: GrpcBackend) -> None:
    fakes.store.fail.add("ListMessages")
    with pytest.raises(BackendUnavailable):
        await backend.open_maildrop(USER)


async def test_fetch(fakes: Grpc, backend: GrpcBackend) -> None:
    content = b"Subject: x\r\n\r\n" + b"z" * 95 + b"\r\n"
    fakes.store.messages[4] = (content, set())
    assert b"".join([c async for c in backend.fetch(USER, 4, len(content))]) == content
    with pytest.raises(MessageGone):
        _ = [c async for c in backend.fetch(USER, 99, 0)]
    # Stopping early (TOP) closes the stream cleanly.
    chunks = backend.fetch(USER, 4, len(content))
    assert await anext(chunks) == content[:10]
    await chunks.aclose()
    fakes.store.fail.add("GetMessageContent")
    with pytest.raises(BackendUnavailable):
        _ = [c async for c in backend.fetch(USER, 4, len(content))]


async def test_flags_and_expunge(fakes: Grpc, backend: GrpcBackend) -> None:
    fakes.store.messages.update({1: (b"a\r\n", set()), 2: (b"b\r\n", set()), 3: (b"c\r\n", set())})
    fakes.store.messages[3][1].add("\\Deleted")  # someone else's mark: not in our uids
    await backend.add_flags(USER, [1, 2], ["\\Deleted"])
    await backend.remove_flags(USER, [2], ["\\Deleted"])
    assert await backend.expunge(USER, [1, 2]) == [1]
    assert sorted(fakes.store.messages) == [2, 3]
    flag_reqs = [r[1] for r in fakes.store.requests if r[0] == "StoreFlags"]
    assert flag_reqs == [
        ([1, 2], store_pb2.FLAGS_MODE_ADD, ["\\Deleted"]),
        ([2], store_pb2.FLAGS_MODE_REMOVE, ["\\Deleted"]),
    ]
    assert ("Expunge", [1, 2]) in fakes.store.requests
    fakes.store.fail.add("Expunge")
    with pytest.raises(BackendUnavailable):
        await backend.expunge(USER, [2])


async def test_whole_session_through_grpc(fakes: Grpc, tmp_path: Path) -> None:
    first = b"Subject: one\r\n\r\n.dotted\r\n"
    second = b"Subject: two\r\n\r\nbody\r\n"
    fakes.store.messages.update({10: (first, set()), 11: (second, set())})
    settings = Pop3Settings(
        pop3_port=0,
        pop3s_port=0,
        data_dir=tmp_path,
        grpc_plaintext=True,  # the fakes are a plain grpc.aio server
        store_address=fakes.address,
        auth_address=fakes.address,
        pop3_auth_failure_delay_seconds=0,
    )
    service = Pop3Service(settings)
    await service.start()
    try:
        assert await service.backend.ready() is False  # the fakes serve no health service

        def run() -> tuple[list[bytes], list[bytes], bytes]:
            pop = poplib.POP3("127.0.0.1", service.port, timeout=10)
            pop.user(USER)
            pop.pass_(PASSWORD)
            uidl = pop.uidl()[1]
            lines = pop.retr(1)[1]
            pop.dele(2)
            bye = pop.quit()
            return list(uidl), list(lines), bye

        uidl, lines, bye = await asyncio.to_thread(run)
    finally:
        await service.stop()
    assert uidl == [b"1 777.10", b"2 777.11"]
    assert b"\r\n".join(lines) + b"\r\n" == first
    assert bye.startswith(b"+OK")
    assert sorted(fakes.store.messages) == [10]
    assert fakes.store.messages[10][1] == {"\\Seen"}
    calls = [r[0] for r in fakes.store.requests]
    assert calls.index("Acquire") < calls.index("GetMailbox")  # locked before the snapshot
    assert calls.index("Expunge") < calls.index("Release")


async def test_lock_and_open_on_a_store_without_open_maildrop(
    fakes: Grpc, backend: GrpcBackend
) -> None:
    """A store from before OpenMaildrop (UNIMPLEMENTED): the lock, then the listing."""
    for uid in (3, 5, 8):
        fakes.store.messages[uid] = (f"msg {uid}\r\n".encode(), set())
    locked, drop = await backend.lock_and_open(USER, "s1", 60)
    assert locked == LockResult(True, "s1") and drop is not None
    assert [m.uid for m in drop.messages] == [3, 5, 8] and drop.uidvalidity == 777
    calls = [r[0] for r in fakes.store.requests]
    assert calls.index("Acquire") < calls.index("GetMailbox")
    assert calls.index("Acquire") < calls.index("ListMessages")
    # Held by s1: no listing for s2.
    fakes.store.requests.clear()
    assert await backend.lock_and_open(USER, "s2", 60) == (LockResult(False, "s1"), None)
    assert [r[0] for r in fakes.store.requests] == ["Acquire"]


async def test_lock_and_open_in_one_call(tmp_path: Path) -> None:
    """The real store's OpenMaildrop (ADR 0057): lock and first page in one call, the rest of
    the INBOX paged as before; no listing without the lock; no INBOX is an empty maildrop."""
    async with InProcessStore(tmp_path) as store:
        for i in range(5):
            await store.deliver(USER, f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())
        maildrop = StoreMaildrop(store.client(), deadline=5.0, page_size=2)
        locked, drop = await maildrop.lock_and_open(USER, "s1", 60)
        assert locked == LockResult(True, "s1") and drop is not None
        expected = await store.messages(USER)
        assert [(m.uid, m.size) for m in drop.messages] == [(m.uid, m.size) for m in expected]
        assert drop.uidvalidity == (await store.app.repo.get_mailbox(USER, "INBOX")).uidvalidity
        assert await maildrop.lock_and_open(USER, "s2", 60) == (LockResult(False, "s1"), None)
        holder = await store.lock_holder(USER)
        assert holder is not None and holder[0] == "s1"
        locked, drop = await maildrop.lock_and_open("nobody@example.test", "s3", 60)
        assert locked.granted and drop is not None and drop.messages == ()


async def test_maildrop_lock_calls(fakes: Grpc, backend: GrpcBackend) -> None:
    assert await backend.acquire_lock(USER, "s1", 60) == LockResult(True, "s1")
    assert await backend.acquire_lock(USER, "s2", 60) == LockResult(False, "s1")
    assert await backend.renew_lock(USER, "s1", 60)
    assert not await backend.renew_lock(USER, "s2", 60)
    await backend.release_lock(USER, "s1")
    assert await backend.acquire_lock(USER, "s2", 60) == LockResult(True, "s2")
    assert ("Acquire", (USER, 60)) in fakes.store.requests
    fakes.store.fail.update({"Acquire", "Renew", "Release"})
    for call in (
        backend.acquire_lock(USER, "s3", 60),
        backend.renew_lock(USER, "s2", 60),
        backend.release_lock(USER, "s2"),
    ):
        with pytest.raises(BackendUnavailable):
            await call


def test_service_built_before_the_event_loop(tmp_path: Path) -> None:
    """As service.main does it: the service object is made before asyncio.run starts a loop,
    so gRPC channels must not be created in the constructor."""
    state = StoreState(messages={1: (b"Subject: s\r\n\r\nx\r\n", set())})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    settings = Pop3Settings(
        pop3_port=0,
        pop3s_port=0,
        data_dir=tmp_path,
        store_address=address,
        auth_address=address,
        grpc_plaintext=True,
    )
    service = Pop3Service(settings)  # no event loop yet

    async def go() -> bytes:
        server = grpc.aio.server()
        store_pb2_grpc.add_StoreServiceServicer_to_server(FakeStore(state), server)
        queue_pb2_grpc.add_MaildropLockServiceServicer_to_server(FakeLocks(state), server)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(FakeAuth(), server)
        server.add_insecure_port(address)
        await server.start()
        await service.start()
        try:

            def run() -> bytes:
                pop = poplib.POP3("127.0.0.1", service.port, timeout=10)
                pop.user(USER)
                resp = pop.pass_(PASSWORD)
                pop.quit()
                return resp

            return await asyncio.to_thread(run)
        finally:
            await service.stop()
            await server.stop(0)

    assert asyncio.run(go()).startswith(b"+OK Logged in, 1 messages")
