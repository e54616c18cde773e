"""Every bad input, sent over a real gRPC channel to the real server (SQLite, embedded bus):
each gets its own status code and a message that says what was wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.grpc import channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store.app import StoreApp
from postmesh.store.settings import StoreSettings

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
S = store_pb2
Key = S.SearchKey


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[store_pb2_grpc.StoreServiceStub]:
    settings = StoreSettings(
        data_dir=tmp_path, store_listen="127.0.0.1:0", bus="sqlite", grpc_plaintext=True
    )
    app = StoreApp(settings)
    await app.start()
    ch = channel(f"127.0.0.1:{app.port}", GrpcSecurity(), "store")
    stub = store_pb2_grpc.StoreServiceStub(ch)
    # A provisioned user with one message, a parent with a child, and a small quota user.
    await stub.Deliver(S.DeliverRequest(queue_id="Q0", user="u", content=b"Subject: x\r\n\r\nx"))
    await stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="p/c"))
    await stub.DeleteMailbox(S.DeleteMailboxRequest(user="u", mailbox="p"))
    await stub.ProvisionUser(S.ProvisionUserRequest(user="full"))
    await stub.SetQuota(S.SetQuotaRequest(user="full", storage_limit_bytes=10, message_limit=0))
    yield stub
    await ch.close()
    await app.stop()


async def chunks(*parts: bytes) -> AsyncIterator[S.ContentChunk]:
    for p in parts:
        yield S.ContentChunk(data=p)


async def appending(
    header: S.AppendHeader | None, *parts: bytes, second_header: bool = False
) -> AsyncIterator[S.AppendRequest]:
    if header is not None:
        yield S.AppendRequest(header=header)
    for p in parts:
        yield S.AppendRequest(chunk=p)
    if second_header:
        yield S.AppendRequest(header=S.AppendHeader(user="u"))


def header(**kw: Any) -> S.AppendHeader:
    return S.AppendHeader(**{"user": "u", "mailbox": "INBOX", "size": 3, **kw})


def uid_key(first: int, last: int) -> Key:
    return Key(uid=S.UidRangeList(ranges=[S.UidRange(first=first, last=last)]))


def cases(stub: store_pb2_grpc.StoreServiceStub) -> list[tuple[str, Callable[[], Any], Any, str]]:
    """(what, call, expected code, text the message must contain)."""
    add = S.FLAGS_MODE_ADD
    return [
        # unknown user / mailbox / message
        ("unknown user list", lambda: stub.ListMailboxes(S.ListMailboxesRequest(user="nobody")),
         NOT_FOUND, "no such user"),
        ("unknown user create", lambda: stub.CreateMailbox(
            S.CreateMailboxRequest(user="nobody", mailbox="X")), NOT_FOUND, "no such user"),
        ("unknown user quota", lambda: stub.GetQuota(S.GetQuotaRequest(user="nobody")),
         NOT_FOUND, "no such user"),
        ("unknown user append", lambda: stub.Append(appending(header(user="nobody"), b"abc")),
         NOT_FOUND, "no such user"),
        ("unknown mailbox", lambda: stub.GetMailbox(S.GetMailboxRequest(user="u", mailbox="Nope")),
         NOT_FOUND, "Nope"),
        ("unknown copy destination", lambda: stub.CopyMessages(
            S.CopyMessagesRequest(user="u", uids=[1], destination="Nope")), NOT_FOUND, "Nope"),
        ("unknown rename source", lambda: stub.RenameMailbox(
            S.RenameMailboxRequest(user="u", mailbox="Nope", new_name="Y")), NOT_FOUND, "Nope"),
        ("unknown message", lambda: stub.GetMessageContent(
            S.GetMessageContentRequest(user="u", uid=9)), NOT_FOUND, "uid 9"),
        ("unknown message, small", lambda: stub.GetSmallMessageContent(
            S.GetSmallMessageContentRequest(user="u", uid=9)), NOT_FOUND, "uid 9"),
        ("unknown mailbox, small", lambda: stub.GetSmallMessageContent(
            S.GetSmallMessageContentRequest(user="u", mailbox="Nope", uid=1)), NOT_FOUND, "Nope"),
        # invalid names
        ("empty name", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="")),
         INVALID, "empty"),
        ("dot-dot", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="a/../b")),
         INVALID, "'..'"),
        ("leading slash", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="/a")),
         INVALID, "empty hierarchy level"),
        ("trailing slash", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="a/")),
         INVALID, "empty hierarchy level"),
        ("double slash", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="a//b")),
         INVALID, "empty hierarchy level"),
        ("control char", lambda: stub.CreateMailbox(
            S.CreateMailboxRequest(user="u", mailbox="a\x07b")), INVALID, "control"),
        ("wildcard *", lambda: stub.CreateMailbox(S.CreateMailboxRequest(user="u", mailbox="a*")),
         INVALID, "wildcard"),
        ("wildcard %", lambda: stub.RenameMailbox(
            S.RenameMailboxRequest(user="u", mailbox="Sent", new_name="50%")), INVALID, "wildcard"),
        ("too long", lambda: stub.CreateMailbox(
            S.CreateMailboxRequest(user="u", mailbox="x" * 256)), INVALID, "255 octets"),
        ("bad special-use", lambda: stub.CreateMailbox(
            S.CreateMailboxRequest(user="u", mailbox="X", special_use="\\All")), INVALID,
         "special-use"),
        ("rename into own inferior", lambda: stub.RenameMailbox(
            S.RenameMailboxRequest(user="u", mailbox="Sent", new_name="Sent/x")), INVALID,
         "inferior"),
        # invalid UID sets
        ("uid 0", lambda: stub.StoreFlags(
            S.StoreFlagsRequest(user="u", uids=[0], mode=add, flags=["\\Seen"])), INVALID,
         "invalid uid 0"),
        ("no uids", lambda: stub.CopyMessages(
            S.CopyMessagesRequest(user="u", uids=[], destination="Sent")), INVALID, "no uids"),
        ("meta uid 0", lambda: stub.GetMessageMeta(S.GetMessageMetaRequest(user="u", uids=[0])),
         INVALID, "invalid uid 0"),
        ("uid range from 0", lambda: stub.Search(S.SearchRequest(user="u", criteria=uid_key(0, 4))),
         INVALID, "UIDs start at 1"),
        ("uid range reversed", lambda: stub.Search(
            S.SearchRequest(user="u", criteria=uid_key(5, 2))), INVALID, "first is above last"),
        ("empty criteria", lambda: stub.Search(S.SearchRequest(user="u")), INVALID,
         "no criterion"),
        # bad flags and Append streams
        ("bad flag", lambda: stub.StoreFlags(
            S.StoreFlagsRequest(user="u", uids=[1], mode=add, flags=["\\Recent"])), INVALID,
         "cannot be stored"),
        ("no flags mode", lambda: stub.StoreFlags(
            S.StoreFlagsRequest(user="u", uids=[1], flags=["\\Seen"])), INVALID, "mode"),
        ("append without header", lambda: stub.Append(appending(None, b"abc")), INVALID,
         "AppendHeader"),
        ("append size mismatch", lambda: stub.Append(appending(header(size=5), b"abc")), INVALID,
         "declared size 5"),
        ("append two headers", lambda: stub.Append(appending(header(), b"abc", second_header=True)),
         INVALID, "one AppendHeader"),
        ("append zero size", lambda: stub.Append(appending(header(size=0))), INVALID,
         "declared size is 0"),
        ("empty PutBlob", lambda: stub.PutBlob(chunks()), INVALID, "empty"),
        ("bad blob id", lambda: stub.GetBlob(S.GetBlobRequest(blob_id="../etc")), INVALID,
         "sha256"),
        # quota
        ("quota deliver", lambda: stub.Deliver(
            S.DeliverRequest(queue_id="Q1", user="full", content=b"x" * 11)), EXHAUSTED,
         "quota exceeded: storage 0/10 bytes"),
        ("quota append", lambda: stub.Append(appending(header(user="full", size=11), b"x" * 11)),
         EXHAUSTED, "quota exceeded: storage 0/10 bytes"),
        # exists
        ("create existing", lambda: stub.CreateMailbox(
            S.CreateMailboxRequest(user="u", mailbox="Sent")), EXISTS, "Sent"),
        ("rename onto existing", lambda: stub.RenameMailbox(
            S.RenameMailboxRequest(user="u", mailbox="Sent", new_name="Trash")), EXISTS, "Trash"),
        # not allowed on INBOX / \Noselect
        ("delete INBOX", lambda: stub.DeleteMailbox(S.DeleteMailboxRequest(user="u", mailbox="inbox")),
         PRECONDITION, "INBOX"),
        ("select noselect", lambda: stub.ListMessages(S.ListMessagesRequest(user="u", mailbox="p")),
         PRECONDITION, "Noselect"),
        ("deliver to noselect", lambda: stub.Deliver(
            S.DeliverRequest(queue_id="Q2", user="u", mailbox="p", content=b"x")), PRECONDITION,
         "Noselect"),
        ("delete noselect parent", lambda: stub.DeleteMailbox(
            S.DeleteMailboxRequest(user="u", mailbox="p")), PRECONDITION, "inferiors"),
    ]  # fmt: skip


async def test_each_bad_input_has_its_status(stub: store_pb2_grpc.StoreServiceStub) -> None:
    for what, call, code, text in cases(stub):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            result = call()
            if isinstance(result, grpc.aio.UnaryStreamCall):
                async for _ in result:
                    pass
            else:
                await result
        got = (what, err.value.code(), text in (err.value.details() or ""))
        assert got == (what, code, True), err.value.details()
    # Nothing of the refused calls was stored.
    box = await stub.GetMailbox(S.GetMailboxRequest(user="u", mailbox="INBOX"))
    assert (box.messages, box.uidnext) == (1, 2)
    quota = await stub.GetQuota(S.GetQuotaRequest(user="full"))
    assert (quota.storage_used_bytes, quota.messages_used) == (0, 0)
