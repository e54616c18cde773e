"""Helpers of the contract suite: test messages, streams, reading content back."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator

from postmesh.api.store.v1 import store_pb2_grpc
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store.events import EventPublisher
from postmesh.store.model import BLOB_CHUNK_BYTES, INBOX, Delivery, FlagsMode
from postmesh.store.repository import StoreRepository
from postmesh.store.servicer import StoreServicer, add_store_service

MiB = 1024 * 1024


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: test {n}\r\n"
        f"Message-ID: <{n}.{random.random()}@example.org>\r\n\r\nbody {n}\r\n"
    ).encode() + body


def random_bytes(size: int, seed: int = 7) -> bytes:
    # Every byte value, including bare CR, LF and NUL: the store must not touch content.
    return random.Random(seed).randbytes(size)


async def content_of(repo: StoreRepository, user: str, mailbox: str, uid: int) -> bytes:
    chunks = [c async for c in await repo.read_message(user, mailbox, uid)]
    assert all(0 < len(c) <= BLOB_CHUNK_BYTES for c in chunks)
    return b"".join(chunks)


async def stream(data: bytes, piece: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def deliver(
    repo: StoreRepository, qid: str, user: str, content: bytes, mailbox: str = "", **kw: object
) -> int:
    r = await repo.deliver(Delivery(qid, user, mailbox, content=content, **kw))  # type: ignore[arg-type]
    return r.uid


async def expunge_uids(
    repo: StoreRepository, user: str, mailbox: str, uids: list[int]
) -> list[int]:
    await repo.store_flags(user, mailbox, uids, FlagsMode.ADD, ["\\Deleted"])
    return (await repo.expunge(user, mailbox, uids)).uids


# What ProvisionUser makes, sorted as the store lists names (binary order).
DEFAULT_NAMES = ["Archive", "Drafts", INBOX, "Junk", "Sent", "Trash"]
SPECIAL_USES = {
    INBOX: "", "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash",
    "Junk": "\\Junk", "Archive": "\\Archive",
}  # fmt: skip


@contextlib.asynccontextmanager
async def grpc_store(repo: StoreRepository) -> AsyncIterator[store_pb2_grpc.StoreServiceStub]:
    """The real StoreServicer on ``repo``, on 127.0.0.1 port 0 (plaintext, no events), and a
    client stub on it: for tests of what concurrent calls over the wire do."""
    server = GrpcServer("127.0.0.1:0", GrpcSecurity())
    server.add(add_store_service, StoreServicer(repo, EventPublisher(None)))
    await server.start([])
    ch = channel(f"127.0.0.1:{server.port}", GrpcSecurity(), "store")
    try:
        yield store_pb2_grpc.StoreServiceStub(ch)
    finally:
        await ch.close()
        await server.stop(grace=1.0)
