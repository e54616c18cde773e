"""The real store process killed (SIGKILL) in the middle of a batch of Deliver calls, restarted,
and the caller retrying what got no answer: every message ends up in its mailbox exactly once
and every blob's reference count is right, read straight from SQLite / the MongoDB collections.

Once on SQLite and once on MongoDB (FerretDB 1.24). Deterministic enough: the kill comes after
the K-th successful answer, while other calls are in flight at every stage of Deliver.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store.blobs import chunk_count
from tests.integration.infra import FerretDB, free_port

MESSAGES = 40
RECIPIENTS = 5  # per message, out of USERS: each content is one blob shared by 5 mailboxes
USERS = 10
KILL_AFTER = 60  # successful answers before SIGKILL (of MESSAGES * RECIPIENTS = 200 calls)
CONCURRENCY = 16
CALL_TIMEOUT = 30.0
STARTUP_TIMEOUT = 60.0


def content(i: int) -> bytes:
    body = f"body of message {i}\r\n".encode()
    if i % 8 == 0:
        body += b"x" * 300_000 + b"\r\n"  # two storage chunks: a crash can fall between them
    return (
        f"From: sender@example.org\r\nTo: list@example.test\r\nSubject: fault {i}\r\n"
        f"Message-ID: <fault-{i}@example.org>\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True)
class Call:
    queue_id: str
    user: str
    content: bytes

    def request(self) -> store_pb2.DeliverRequest:
        return store_pb2.DeliverRequest(
            queue_id=self.queue_id, user=self.user, content=self.content
        )


def workload(users: int) -> list[Call]:
    # Consecutive calls deliver one content to several users: they race on the shared blob.
    # With one user, every call goes to one mailbox (a queue id per copy): the MongoDB
    # backend writes them in groups (grouping.py), so the kill falls in the middle of one.
    return [
        Call(f"FAULT{i:04d}" + (f"-{k}" if users == 1 else ""), f"u{(i + k) % users}@example.test",
             content(i))
        for i in range(MESSAGES)
        for k in range(RECIPIENTS)
    ]  # fmt: skip


@dataclass
class StoreProcess:
    env: dict[str, str]
    port: int
    log_dir: Path
    # The client's credentials: delivery's, whose calls these are.
    security: GrpcSecurity
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    async def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"store-{self.starts}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "postmesh.store",
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        ch = channel(f"127.0.0.1:{self.port}", self.security, "store")
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                while not await is_serving(ch, "postmesh.api.store.v1.StoreService"):
                    assert self.proc.returncode is None, f"store exited:\n{self.tail()}"
                    await asyncio.sleep(0.1)
        finally:
            await ch.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the process we started (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
        await self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self.logs
        )


@dataclass
class Backend:
    kind: str
    env: dict[str, str]
    sqlite_path: Path | None = None
    mongo_url: str = ""
    mongo_db: str = ""


@pytest.fixture(params=["sqlite", "mongodb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    env = {"POSTMESH_STORE_BACKEND": request.param}
    if request.param == "sqlite":
        yield Backend("sqlite", env, sqlite_path=tmp_path / "data" / "store.sqlite3")
        return
    ferretdb: FerretDB = request.getfixturevalue("ferretdb")
    name = f"faults_{uuid.uuid4().hex[:12]}"
    env |= {"POSTMESH_MONGODB_URL": ferretdb.url, "POSTMESH_MONGODB_DATABASE": name}
    yield Backend("mongodb", env, mongo_url=ferretdb.url, mongo_db=name)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    await client.drop_database(name)
    await client.close()


@pytest.fixture
async def store(backend: Backend, tmp_path: Path) -> AsyncIterator[StoreProcess]:
    port = free_port()
    pki = ensure_dev_pki(tmp_path / "pki", ["store", "delivery"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTMESH_")}
    env |= {
        "POSTMESH_STORE_LISTEN": f"127.0.0.1:{port}",
        "POSTMESH_OPS_PORT": str(free_port()),
        "POSTMESH_DATA_DIR": str(tmp_path / "data"),
        "POSTMESH_BUS": "sqlite",
        "POSTMESH_BUS_SQLITE_PATH": str(tmp_path / "bus.sqlite3"),
        "POSTMESH_LOG_LEVEL": "WARNING",
        **pki["store"].env(),
        **backend.env,
    }
    process = StoreProcess(env, port, tmp_path, pki["delivery"].security())
    yield process
    await process.stop()


async def first_pass(
    store: StoreProcess, calls: list[Call]
) -> dict[Call, store_pb2.DeliverResponse]:
    """Send every call concurrently; SIGKILL the store at the KILL_AFTER-th answer. Calls not
    sent by then are not sent (they count as unanswered, like those in flight)."""
    answered: dict[Call, store_pb2.DeliverResponse] = {}
    killed = asyncio.Event()
    gate = asyncio.Semaphore(CONCURRENCY)
    ch = channel(f"127.0.0.1:{store.port}", store.security, "store")
    stub = store_pb2_grpc.StoreServiceStub(ch)

    async def send(call: Call) -> None:
        async with gate:
            if killed.is_set():
                return
            try:
                answered[call] = await stub.Deliver(call.request(), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                assert killed.is_set(), f"failed before the kill: {e.code()} {e.details()}"
                return
            if len(answered) == KILL_AFTER and not killed.is_set():
                killed.set()
                store.kill()

    try:
        await asyncio.gather(*(send(c) for c in calls))
    finally:
        await ch.close()
    assert killed.is_set()
    return answered


async def retry(
    stub: store_pb2_grpc.StoreServiceStub, call: Call, attempts: int = 5
) -> store_pb2.DeliverResponse:
    for n in range(attempts):
        try:
            resp: store_pb2.DeliverResponse = await stub.Deliver(
                call.request(), timeout=CALL_TIMEOUT
            )
            return resp
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or n == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def read(stub: store_pb2_grpc.StoreServiceStub, user: str, uid: int) -> bytes:
    req = store_pb2.GetMessageContentRequest(user=user, mailbox="INBOX", uid=uid)
    return b"".join([c.data async for c in stub.GetMessageContent(req, timeout=CALL_TIMEOUT)])


def sqlite_blobs(path: Path) -> dict[str, tuple[int, int, int, int]]:
    """blob id -> (refcount, messages referencing it, chunks, stored bytes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT b.id, b.refcount,"
            " (SELECT COUNT(*) FROM messages m WHERE m.blob_id = b.id),"
            " (SELECT COUNT(*) FROM blob_chunks c WHERE c.blob_id = b.id),"
            " (SELECT COALESCE(SUM(LENGTH(c.data)), 0) FROM blob_chunks c WHERE c.blob_id = b.id)"
            " FROM blobs b"
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def mongo_blobs(url: str, database: str) -> dict[str, tuple[int, int, int, int]]:
    """The same from the collections of postmesh.store.mongodb: the reference count is the
    number of ``message`` documents in store_blob_refs (one per delivery key)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client[database]
    out: dict[str, tuple[int, int, int, int]] = {}
    try:
        async for blob in db["store_blobs"].find({}):
            assert blob["state"] == "complete", blob
            refs = (
                await db["store_blob_refs"]
                .find({"blob_id": blob["_id"], "kind": "message"})
                .to_list(None)
            )
            for ref in refs:  # a reference always belongs to a live message with its key
                msg = await db["store_messages"].find_one({"_id": ref["_id"]})
                assert msg is not None and msg["blob_id"] == blob["_id"] and not msg["expunged"]
            messages = await db["store_messages"].count_documents(
                {"blob_id": blob["_id"], "expunged": False}
            )
            chunks = await db["store_blob_chunks"].find({"blob": blob["key"]}).to_list(None)
            if "data" in blob:  # a blob of one chunk carries it itself
                chunks = [blob]
            out[blob["_id"]] = (
                len(refs),
                messages,
                len(chunks),
                sum(len(c["data"]) for c in chunks),
            )
    finally:
        await client.close()
    return out


@pytest.mark.parametrize("users", [USERS, 1], ids=["spread", "one-mailbox"])
async def test_store_killed_mid_batch_loses_and_duplicates_nothing(
    backend: Backend, store: StoreProcess, users: int
) -> None:
    calls = workload(users)
    try:
        async with asyncio.timeout(300):
            await store.start()
            answered = await first_pass(store, calls)
            assert store.proc is not None
            await store.proc.wait()  # reaped: the restart below is a new process
            missing = [c for c in calls if c not in answered]
            assert len(answered) >= KILL_AFTER and missing  # the kill hit mid-batch

            await store.start()  # same data, same port
            ch = channel(f"127.0.0.1:{store.port}", store.security, "store")
            stub = store_pb2_grpc.StoreServiceStub(ch)
            try:
                gate = asyncio.Semaphore(CONCURRENCY)

                async def again(call: Call) -> store_pb2.DeliverResponse:
                    async with gate:
                        return await retry(stub, call)

                retried = await asyncio.gather(*(again(c) for c in missing))
                results = {**answered, **dict(zip(missing, retried, strict=True))}
                # Answered calls sent again (a redelivered Kafka record): same UID, no copy.
                for call in list(answered)[:20]:
                    dup = await retry(stub, call)
                    assert dup.duplicate and dup.uid == answered[call].uid

                # Every message in its mailbox exactly once, with its content.
                expected: dict[str, Counter[bytes]] = {}
                for call in calls:
                    expected.setdefault(call.user, Counter())[call.content] += 1
                mailboxes: dict[tuple[str, int], bytes] = {}
                for user, contents in expected.items():
                    page = await stub.ListMessages(
                        store_pb2.ListMessagesRequest(user=user, mailbox="INBOX", limit=1000),
                        timeout=CALL_TIMEOUT,
                    )
                    assert not page.more
                    for m in page.messages:
                        mailboxes[user, m.uid] = await read(stub, user, m.uid)
                    stored = Counter(c for (u, _), c in mailboxes.items() if u == user)
                    assert stored == contents, f"{user}: {len(page.messages)} messages"
                for call, r in results.items():  # each answer names the message it made
                    assert mailboxes[call.user, r.uid] == call.content
            finally:
                await ch.close()
            await store.stop()  # a clean stop: the files / collections are at rest for reading

            if backend.kind == "sqlite":
                assert backend.sqlite_path is not None
                blobs = sqlite_blobs(backend.sqlite_path)
            else:
                blobs = await mongo_blobs(backend.mongo_url, backend.mongo_db)
    except BaseException:
        print(store.tail())
        raise
    want = {
        hashlib.sha256(content(i)).hexdigest(): (
            RECIPIENTS, RECIPIENTS, chunk_count(len(content(i))), len(content(i))
        )
        for i in range(MESSAGES)
    }  # fmt: skip
    assert blobs == want
