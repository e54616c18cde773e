"""The gRPC implementations of the backend interfaces against a real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common import columns
from postmesh.common.backend import BackendUnavailable
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.imap_gw.backend import (
    FlagsMode,
    MailboxNotFound,
    MessageNotFound,
    SearchRejected,
)
from postmesh.imap_gw.grpc_backend import GrpcAuthenticator, GrpcMailStore
from postmesh.imap_gw.parser.search import And, Flag, Header, Uid
from postmesh.imap_gw.parser.sequence import STAR, SequenceSet


class Store(store_pb2_grpc.StoreServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def GetMailbox(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.mailbox != "INBOX":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such mailbox")
        return store_pb2.MailboxInfo(name="INBOX", uidvalidity=7, uidnext=3, messages=2)

    async def ListMessages(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return store_pb2.ListMessagesResponse(
            messages=[store_pb2.MessageSummary(uid=2, flags=["\\Seen"], size=10, internal_date=5)],
            more=True,
        )

    async def ListMessageFlags(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.mailbox == "Old":
            # A store from before ListMessageFlags: the gateway falls back to ListMessages.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method")
        if request.mailbox == "Broken":
            return store_pb2.ListMessageFlagsResponse(uids=[1, 2], modseqs=[1], flag_set_index=[0])
        if request.mailbox == "Torn":  # byte columns that are not whole integers
            return store_pb2.ListMessageFlagsResponse(uids_le32=b"\x01\x00\x00")
        if request.mailbox == "Packed" and request.packed_columns:
            resp = store_pb2.ListMessageFlagsResponse(
                uids_le32=columns.pack(columns.U32, [1, 2, 4]),
                modseqs_le64=columns.pack(columns.U64, [3, 1, 2**40]),
                flag_set_index_le32=columns.pack(columns.U32, [0, 1, 0]),
            )
            resp.flag_sets.add().flags.extend(["\\Seen"])
            resp.flag_sets.add()
            return resp
        resp = store_pb2.ListMessageFlagsResponse(
            uids=[1, 2, 4], modseqs=[3, 1, 2], flag_set_index=[0, 1, 0], more=True
        )
        resp.flag_sets.add().flags.extend(["\\Seen", "$Work"])
        resp.flag_sets.add()
        return resp

    async def GetMessageContent(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.requests.append(request)
        if request.uid not in (2, 3):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such message")
        for part in (b"Subject: x\r\n", b"\r\n", b"body", b"." * 10 * (request.uid == 3)):
            yield store_pb2.ContentChunk(data=part)

    async def GetSmallMessageContent(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.mailbox == "Old":
            # A store from before GetSmallMessageContent: the gateway streams instead.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method")
        if request.uid == 2:
            return store_pb2.SmallMessageContent(data=b"Subject: x\r\n\r\nbody", complete=True)
        if request.uid == 3:
            return store_pb2.SmallMessageContent(complete=False)  # too large: stream it
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such message")

    async def StoreFlags(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        await context.abort(grpc.StatusCode.INTERNAL, "database on fire")

    async def Expunge(self, request: Any, context: Any) -> Any:
        return store_pb2.ExpungeResponse(expunged_uids=[4, 5])

    async def Search(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.mailbox == "Gone":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such mailbox")
        if request.mailbox == "Bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid search criteria: deep")
        if request.mailbox == "Down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database down")
        return store_pb2.SearchResponse(uids=[2, 5], highest_modseq=9)


class Auth(auth_pb2_grpc.AuthServiceServicer):
    async def Authenticate(self, request: Any, context: Any) -> Any:
        ok = request.password == "pw" and request.protocol == "imap"
        return auth_pb2.AuthenticateResponse(ok=ok, user=request.username.lower() if ok else "")


@pytest.fixture
async def backends(
    tmp_path: Path,
) -> AsyncIterator[tuple[GrpcMailStore, GrpcAuthenticator, Store]]:
    # Over mutual TLS, as imap-gw calls the store and auth in production (ADR 10).
    pki = ensure_dev_pki(tmp_path, ["store", "imap-gw"])
    server = GrpcServer("127.0.0.1:0", pki["store"].security())
    store = Store()
    server.add(store_pb2_grpc.add_StoreServiceServicer_to_server, store)
    server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, Auth())
    await server.start([])
    ch = channel(f"127.0.0.1:{server.port}", pki["imap-gw"].security(), "store")
    try:
        yield (
            GrpcMailStore(ch, 5.0),
            GrpcAuthenticator(auth_pb2_grpc.AuthServiceStub(ch), 5.0),  # type: ignore[arg-type]
            store,
        )
    finally:
        await ch.close()
        await server.stop(0)


async def test_store_calls_and_error_mapping(
    backends: tuple[GrpcMailStore, GrpcAuthenticator, Store],
) -> None:
    store, _, servicer = backends
    info = await store.get_mailbox("u", "INBOX")
    assert (info.name, info.uidvalidity, info.uidnext, info.messages) == ("INBOX", 7, 3, 2)
    with pytest.raises(MailboxNotFound):
        await store.get_mailbox("u", "Nope")
    page = await store.list_messages("u", "INBOX", 1, 50)
    assert page.more and [(m.uid, m.flags, m.size) for m in page.messages] == [(2, ("\\Seen",), 10)]
    assert servicer.requests[-1].after_uid == 1 and servicer.requests[-1].limit == 50
    assert await store.get_content("u", "INBOX", 2) == b"Subject: x\r\n\r\nbody"
    assert [type(r).__name__ for r in servicer.requests[-1:]] == ["GetSmallMessageContentRequest"]
    # Over the one-answer limit: streamed.
    assert await store.get_content("u", "INBOX", 3) == b"Subject: x\r\n\r\nbody" + b"." * 10
    assert [type(r).__name__ for r in servicer.requests[-2:]] == [
        "GetSmallMessageContentRequest",
        "GetMessageContentRequest",
    ]
    with pytest.raises(MessageNotFound):
        await store.get_content("u", "INBOX", 9)
    # A store without the unary call: streamed, and not asked again.
    assert await store.get_content("u", "Old", 2) == b"Subject: x\r\n\r\nbody"
    assert await store.get_content("u", "INBOX", 2) == b"Subject: x\r\n\r\nbody"
    assert [type(r).__name__ for r in servicer.requests[-3:]] == [
        "GetSmallMessageContentRequest",
        "GetMessageContentRequest",
        "GetMessageContentRequest",
    ]
    with pytest.raises(BackendUnavailable):
        await store.store_flags("u", "INBOX", [2], FlagsMode.ADD, ["\\Seen"])
    assert servicer.requests[-1].mode == store_pb2.FLAGS_MODE_ADD
    assert await store.expunge("u", "INBOX") == [4, 5]


async def test_auth_calls(backends: tuple[GrpcMailStore, GrpcAuthenticator, Store]) -> None:
    _, auth, _ = backends
    ok = await auth.check_password("Bob@X", "pw", remote_ip="127.0.0.1", mechanism="")
    assert ok.user == "bob@x"
    refused = await auth.check_password("bob@x", "no", remote_ip="127.0.0.1", mechanism="PLAIN")
    assert refused.user is None


async def test_unreachable_backend_is_unavailable() -> None:
    ch = channel("127.0.0.1:1", GrpcSecurity(), "store")
    try:
        store = GrpcMailStore(ch, 0.5)
        with pytest.raises(BackendUnavailable):
            await store.list_mailboxes("u")
    finally:
        await ch.close()


async def test_search_sends_the_criteria_tree_and_maps_errors(
    backends: tuple[GrpcMailStore, GrpcAuthenticator, Store],
) -> None:
    store, _, servicer = backends
    criteria = And(
        (
            Uid(SequenceSet(((4, 2), (7, STAR)))),
            Flag("\\Seen", present=False),
            Header("Subject", "report"),
        )
    )
    found = await store.search("u", "INBOX", criteria)
    assert (list(found.uids), found.highest_modseq) == ([2, 5], 9)
    req = servicer.requests[-1]
    keys = getattr(req.criteria, "and").keys
    # "4:2" goes out as 2..4 and "7:*" as 7..(last 0 = highest), as the store requires.
    assert [(r.first, r.last) for r in keys[0].uid.ranges] == [(2, 4), (7, 0)]
    assert keys[1].flag_unset == "\\Seen"
    assert (keys[2].header.name, keys[2].header.value) == ("Subject", "report")
    with pytest.raises(MailboxNotFound):
        await store.search("u", "Gone", criteria)
    with pytest.raises(SearchRejected, match="deep"):
        await store.search("u", "Bad", criteria)
    with pytest.raises(BackendUnavailable):
        await store.search("u", "Down", criteria)


async def test_list_flags_columns_and_fallback(
    backends: tuple[GrpcMailStore, GrpcAuthenticator, Store],
) -> None:
    store, _, servicer = backends
    page = await store.list_flags("u", "INBOX", 0, 10)
    assert servicer.requests[-1].limit == 10 and servicer.requests[-1].packed_columns
    assert (list(page.uids), list(page.modseqs), page.more) == ([1, 2, 4], [3, 1, 2], True)
    flags = [page.flag_sets[i] for i in page.flag_index]
    assert flags == [("\\Seen", "$Work"), (), ("\\Seen", "$Work")]
    # An older store: the same page from ListMessages.
    before = len(servicer.requests)
    old = await store.list_flags("u", "Old", 1, 10)
    assert len(servicer.requests) == before + 2  # ListMessageFlags, then ListMessages
    assert (servicer.requests[-1].after_uid, servicer.requests[-1].limit) == (1, 10)
    assert (list(old.uids), old.more) == ([2], True)
    assert [old.flag_sets[i] for i in old.flag_index] == [("\\Seen",)]
    # A store that answers with byte columns (ADR 0075).
    packed = await store.list_flags("u", "Packed", 0, 10)
    assert (list(packed.uids), list(packed.modseqs)) == ([1, 2, 4], [3, 1, 2**40])
    assert [packed.flag_sets[i] for i in packed.flag_index] == [("\\Seen",), (), ("\\Seen",)]
    # Columns of different lengths would misnumber messages: a store fault, not data.
    with pytest.raises(BackendUnavailable):
        await store.list_flags("u", "Broken", 0, 10)
    with pytest.raises(BackendUnavailable, match="malformed"):
        await store.list_flags("u", "Torn", 0, 10)
