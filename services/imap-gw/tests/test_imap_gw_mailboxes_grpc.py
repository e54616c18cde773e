"""The mailbox-management MailStore methods on a real grpc.aio server: requests as the store
expects them and each gRPC status as the session's exception."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.backend import BackendUnavailable
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.imap_gw.backend import (
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxRejected,
    MailboxTree,
    Quota,
)
from postmesh.imap_gw.grpc_backend import GrpcMailStore

# The status each mailbox name makes the fake store answer with.
_ERRORS = {
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "missing": grpc.StatusCode.NOT_FOUND,
    "bad*": grpc.StatusCode.INVALID_ARGUMENT,
    "parent": grpc.StatusCode.FAILED_PRECONDITION,
    "down": grpc.StatusCode.UNAVAILABLE,
}


class Store(store_pb2_grpc.StoreServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def _check(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        code = _ERRORS.get(request.mailbox)
        if code is not None:
            await context.abort(code, f"refused {request.mailbox}")

    async def CreateMailbox(self, request: Any, context: Any) -> Any:
        await self._check(request, context)
        return store_pb2.MailboxInfo(name=request.mailbox, uidvalidity=9, uidnext=1)

    async def DeleteMailbox(self, request: Any, context: Any) -> Any:
        await self._check(request, context)
        return store_pb2.DeleteMailboxResponse(messages_deleted=4)

    async def RenameMailbox(self, request: Any, context: Any) -> Any:
        await self._check(request, context)
        return store_pb2.MailboxInfo(name=request.new_name, uidvalidity=9, uidnext=7)

    async def SetSubscription(self, request: Any, context: Any) -> Any:
        await self._check(request, context)
        return store_pb2.SetSubscriptionResponse()

    async def ListMailboxes(self, request: Any, context: Any) -> Any:
        return store_pb2.ListMailboxesResponse(
            mailboxes=[
                store_pb2.MailboxInfo(
                    name="A", uidvalidity=1, uidnext=5, messages=4, deleted=1, size=900,
                    noselect=False, has_children=True, subscribed=True,
                ),
                store_pb2.MailboxInfo(name="A/B", noselect=True),
            ],
            subscriptions=["A", "Gone"],
        )  # fmt: skip

    async def GetQuota(self, request: Any, context: Any) -> Any:
        return store_pb2.QuotaInfo(
            storage_used_bytes=10, storage_limit_bytes=2048, messages_used=1, message_limit=5
        )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[tuple[GrpcMailStore, Store]]:
    pki = ensure_dev_pki(tmp_path, ["store", "imap-gw"])  # mutual TLS, as in production
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


async def test_requests_and_results(backend: tuple[GrpcMailStore, Store]) -> None:
    ms, store = backend
    info = await ms.create_mailbox("u", "New", "\\Archive")
    assert info.name == "New" and info.uidvalidity == 9
    assert store.requests[-1] == store_pb2.CreateMailboxRequest(
        user="u", mailbox="New", special_use="\\Archive"
    )
    assert await ms.delete_mailbox("u", "Old") == 4
    renamed = await ms.rename_mailbox("u", "Old", "Newer")
    assert renamed.name == "Newer" and renamed.uidnext == 7
    await ms.set_subscription("u", "A", True)
    assert store.requests[-1] == store_pb2.SetSubscriptionRequest(
        user="u", mailbox="A", subscribed=True
    )
    tree = await ms.list_mailbox_tree("u")
    assert isinstance(tree, MailboxTree) and tree.subscriptions == ["A", "Gone"]
    a, b = tree.mailboxes
    assert (a.deleted, a.size, a.has_children, a.subscribed) == (1, 900, True, True)
    assert b.noselect
    assert await ms.get_quota("u") == Quota(10, 2048, 1, 5)


@pytest.mark.parametrize(
    ("mailbox", "error"),
    [
        ("exists", MailboxExists),
        ("missing", MailboxNotFound),
        ("bad*", MailboxRejected),
        ("parent", MailboxHasChildren),
        ("down", BackendUnavailable),
    ],
)
async def test_error_mapping(
    backend: tuple[GrpcMailStore, Store], mailbox: str, error: type[Exception]
) -> None:
    ms, _ = backend
    with pytest.raises(error):
        await ms.delete_mailbox("u", mailbox)
    with pytest.raises(error):
        await ms.rename_mailbox("u", mailbox, "x")
