"""GrpcMailStore's Append (client streaming), CopyMessages and MoveMessages against a real
grpc.aio server: chunks as written, and the store's status codes as exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.imap_gw.backend import (
    AppendResult,
    CopyResult,
    MailboxNotFound,
    OverQuota,
    StoreRefused,
)
from postmesh.imap_gw.grpc_backend import GrpcMailStore


class Store(store_pb2_grpc.StoreServiceServicer):
    def __init__(self) -> None:
        self.headers: list[Any] = []
        self.chunks: list[bytes] = []
        self.completed = 0

    async def Append(self, request_iterator: Any, context: Any) -> Any:
        requests = aiter(request_iterator)
        first = await anext(requests)
        h = first.header
        self.headers.append(h)
        if h.mailbox == "Full":  # refused on the header, as the store checks quota first
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota exceeded")
        if h.mailbox == "Nowhere":
            await context.abort(grpc.StatusCode.NOT_FOUND, "mailbox 'Nowhere' does not exist")
        async for req in requests:
            self.chunks.append(req.chunk)
        if sum(map(len, self.chunks)) != h.size:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "size mismatch")
        self.completed += 1
        return store_pb2.AppendResponse(uid=42, uidvalidity=7)

    # What the client asks when grpc.aio lost the status of an Append ended early (it then
    # reports INTERNAL, grpc/grpc#36066): the same answers as Append's header checks.
    async def GetMailbox(self, request: Any, context: Any) -> Any:
        if request.mailbox == "Nowhere":
            await context.abort(grpc.StatusCode.NOT_FOUND, "mailbox 'Nowhere' does not exist")
        return store_pb2.MailboxInfo(name=request.mailbox, uidvalidity=7)

    async def GetQuota(self, request: Any, context: Any) -> Any:
        # "Full" is full: no room for anything.
        return store_pb2.QuotaInfo(storage_used_bytes=1000, storage_limit_bytes=1000)

    async def CopyMessages(self, request: Any, context: Any) -> Any:
        if request.destination == "Nowhere":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such mailbox")
        return store_pb2.CopyMessagesResponse(
            destination_uidvalidity=9, source_uids=[1, 3], destination_uids=[10, 11]
        )

    async def MoveMessages(self, request: Any, context: Any) -> Any:
        if request.destination == "Parent":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not selectable")
        return store_pb2.CopyMessagesResponse(
            destination_uidvalidity=9, source_uids=[1], destination_uids=[10], expunged_uids=[1]
        )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[tuple[GrpcMailStore, Store]]:
    pki = ensure_dev_pki(tmp_path / "pki", ["store", "imap-gw"])  # mutual TLS (ADR 10)
    server = GrpcServer("127.0.0.1:0", pki["store"].security())
    store = Store()
    server.add(store_pb2_grpc.add_StoreServiceServicer_to_server, store)
    await server.start([])
    ch = channel(f"127.0.0.1:{server.port}", pki["imap-gw"].security(), "store")
    try:
        yield GrpcMailStore(ch, 5.0), store
    finally:
        await ch.close()
        await server.stop(0)


async def _chunks(parts: list[bytes], delay: float = 0) -> AsyncIterator[bytes]:
    for p in parts:
        if delay:
            await asyncio.sleep(delay)
        yield p


async def test_append_streams_chunks(backend: tuple[GrpcMailStore, Store]) -> None:
    gm, store = backend
    parts = [b"Subject: x\r\n", b"\r\n", b"body\r\n"]
    r = await gm.append("u", "INBOX", ["\\Seen"], 123, 20, _chunks(parts))
    assert r == AppendResult(uidvalidity=7, uid=42)
    assert store.chunks == parts
    h = store.headers[0]
    assert (h.user, h.mailbox, list(h.flags), h.internal_date, h.size) == (
        "u", "INBOX", ["\\Seen"], 123, 20,
    )  # fmt: skip


async def test_append_refused_early_or_late(backend: tuple[GrpcMailStore, Store]) -> None:
    gm, _ = backend
    # The store ends the call on the header while chunks are still being written.
    with pytest.raises(OverQuota):
        await gm.append("u", "Full", [], 0, 500, _chunks([b"x" * 10] * 50, 0.001))
    with pytest.raises(MailboxNotFound):
        await gm.append("u", "Nowhere", [], 0, 5, _chunks([b"hello"]))
    with pytest.raises(StoreRefused):
        await gm.append("u", "INBOX", [], 0, 99, _chunks([b"short"]))


async def test_append_aborted_by_the_client_side(backend: tuple[GrpcMailStore, Store]) -> None:
    gm, store = backend

    async def broken() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n"
        raise ValueError("client sent junk after the literal")

    with pytest.raises(ValueError, match="junk"):
        await gm.append("u", "INBOX", [], 0, 100, broken())
    await asyncio.sleep(0.05)
    assert store.completed == 0  # the call was cancelled, nothing stored


async def test_copy_and_move(backend: tuple[GrpcMailStore, Store]) -> None:
    gm, _ = backend
    assert await gm.copy_messages("u", "INBOX", [1, 2, 3], "Sent") == CopyResult(
        9, [1, 3], [10, 11], []
    )
    with pytest.raises(MailboxNotFound):
        await gm.copy_messages("u", "INBOX", [1], "Nowhere")
    assert (await gm.move_messages("u", "INBOX", [1], "Sent")).expunged_uids == [1]
    with pytest.raises(StoreRefused, match="not selectable"):
        await gm.move_messages("u", "INBOX", [1], "Parent")
