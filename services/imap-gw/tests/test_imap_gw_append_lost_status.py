"""An Append whose status grpc.aio lost (INTERNAL "Internal error from Core" when the store
ended the call as a chunk was written, grpc/grpc#36066): the store client asks the store's
header checks again, against the real store in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from postmesh.common.backend import BackendUnavailable
from postmesh.common.store_client import MailboxNotFound, OverQuota, StoreClient
from postmesh.store.in_process import InProcessStore

USER = "alice@example.org"
LOST = AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), Metadata(), "Internal error from Core")


@pytest.fixture
async def client() -> AsyncIterator[tuple[InProcessStore, StoreClient]]:
    async with InProcessStore() as store:
        await store.deliver(USER, b"Subject: x\r\n\r\n" + b"y" * 100 + b"\r\n")
        yield store, store.client()


async def test_lost_status_of_a_refused_append_is_found_again(
    client: tuple[InProcessStore, StoreClient],
) -> None:
    store, c = client
    used = sum(m.size for m in await store.messages(USER))
    # Room for 10 more octets: an append of 10 fits, of 11 does not.
    await store.app.repo.set_quota(USER, used + 10, 0)
    assert isinstance(await c._append_refusal(USER, "INBOX", 11, LOST), OverQuota)
    assert isinstance(await c._append_refusal(USER, "Nowhere", 11, LOST), MailboxNotFound)
    # Nothing the store would refuse: the failure stays what it was, temporary.
    assert isinstance(await c._append_refusal(USER, "INBOX", 10, LOST), BackendUnavailable)
    # The message count limit too.
    await store.app.repo.set_quota(USER, 0, 1)
    assert isinstance(await c._append_refusal(USER, "INBOX", 1, LOST), OverQuota)
