"""``make bench`` part two: the store's gRPC API on its own, on both backends.

- Deliver: messages/s for 4 KiB and 100 KiB messages, to 1 and to 10 recipients (one Deliver
  call per recipient, as the delivery service makes them; 8 concurrent callers);
- FETCH of 1,000 message headers: GetMessageMeta for 1,000 UIDs (what FETCH ENVELOPE /
  BODY[HEADER] reads), p50/p99 over repeated calls;
- SEARCH over 10,000 messages: a header search (SUBJECT substring), a flag search, and a body
  text search, p50/p99.
The store runs as its own process (``python -m postmesh.store``), as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity
from tests.bench.stats import pct
from tests.integration.infra import FerretDB, free_port

CONCURRENCY = 8


def message(i: int, size: int) -> bytes:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    head = (
        f"From: Sender {i} <sender{i}@example.net>\r\nTo: user@example.test\r\n"
        f"Subject: bench {words[i % 6]} message {i}\r\nMessage-ID: <{i}.{uuid.uuid4().hex}@b>\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = (f"{words[(i + 1) % 6]} " * 12 + "\r\n").encode()
    return head.encode() + line * max(1, (size - len(head)) // len(line))


@contextlib.contextmanager
def store_process(env: dict[str, str]) -> Iterator[tuple[str, GrpcSecurity]]:
    """A store process on a free port, over mutual TLS as in production; yields its address
    and the credentials of delivery (the store's main caller)."""
    port, ops = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="postmesh-bench-store-") as tmp:
        pki = ensure_dev_pki(Path(tmp) / "pki", ["store", "delivery"])
        full = {
            **os.environ,
            "POSTMESH_STORE_LISTEN": f"127.0.0.1:{port}",
            "POSTMESH_OPS_PORT": str(ops),
            "POSTMESH_DATA_DIR": tmp,
            "POSTMESH_LOG_LEVEL": "WARNING",
            **pki["store"].env(),
            **env,
        }
        log = (Path(tmp) / "store.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "postmesh.store"], env=full, stdout=log, stderr=log
        )
        try:
            yield f"127.0.0.1:{port}", pki["delivery"].security()
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()


async def wait_serving(address: str, security: GrpcSecurity) -> None:
    ch = channel(address, security, "store")
    for _ in range(300):
        if await is_serving(ch):
            await ch.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"store at {address} did not become ready")


async def deliver_bench(
    stub: store_pb2_grpc.StoreServiceStub, size: int, rcpts: int, n: int
) -> None:
    users = [f"bench{size}-{rcpts}-{r}-{uuid.uuid4().hex[:6]}@example.test" for r in range(rcpts)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    lat: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            content = message(i, size)
            qid = f"Q{size}{rcpts}{i}{uuid.uuid4().hex[:8]}"
            for user in users:
                t0 = time.perf_counter()
                await stub.Deliver(
                    store_pb2.DeliverRequest(queue_id=qid, user=user, content=content), timeout=60
                )
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    dt = time.perf_counter() - t0
    print(
        f"deliver {size // 1024:>4} KiB x {rcpts:>2} rcpt  {n / dt:8.1f} msg/s  {n * rcpts / dt:8.1f} "
        f"deliveries/s  p50 {statistics.median(lat) * 1000:6.1f} ms  p99 {pct(lat, 99) * 1000:6.1f} ms"
    )


async def fill(stub: store_pb2_grpc.StoreServiceStub, user: str, n: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await stub.Deliver(
                store_pb2.DeliverRequest(queue_id=f"F{i}", user=user, content=message(i, 2048)),
                timeout=60,
            )

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def timed(label: str, rounds: int, call: object) -> None:
    lat = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await call()  # type: ignore[operator]
        lat.append(time.perf_counter() - t0)
    print(
        f"{label:<34} {rounds / sum(lat):8.1f} ops/s  p50 {statistics.median(lat) * 1000:7.1f} ms  "
        f"p99 {pct(lat, 99) * 1000:7.1f} ms"
    )


async def run(address: str, security: GrpcSecurity, messages: int, search_messages: int) -> None:
    await wait_serving(address, security)
    ch = channel(address, security, "store")
    stub = store_pb2_grpc.StoreServiceStub(ch)
    for size in (4096, 102400):
        for rcpts in (1, 10):
            await deliver_bench(
                stub, size, rcpts, messages if rcpts == 1 else max(1, messages // 10)
            )

    user = f"search-{uuid.uuid4().hex[:8]}@example.test"
    t0 = time.perf_counter()
    await fill(stub, user, search_messages)
    print(f"filled {search_messages} messages (2 KiB) in {time.perf_counter() - t0:.1f} s")
    uids = []
    after = 0
    while True:
        page = await stub.ListMessages(
            store_pb2.ListMessagesRequest(user=user, mailbox="INBOX", after_uid=after, limit=5000),
            timeout=60,
        )
        uids += [m.uid for m in page.messages]
        if not page.more:
            break
        after = uids[-1]
    first_1000 = uids[:1000]

    async def meta() -> None:
        r = await stub.GetMessageMeta(
            store_pb2.GetMessageMetaRequest(user=user, mailbox="INBOX", uids=first_1000), timeout=60
        )
        assert len(r.messages) == len(first_1000)

    await timed("fetch headers of 1,000 messages", 20, meta)

    def search(key: store_pb2.SearchKey, expect_some: bool = True) -> object:
        async def go() -> None:
            r = await stub.Search(
                store_pb2.SearchRequest(user=user, mailbox="INBOX", criteria=key), timeout=120
            )
            assert (len(r.uids) > 0) == expect_some

        return go

    await timed(
        f"search {search_messages:,}: SUBJECT charlie",
        10,
        search(store_pb2.SearchKey(header=store_pb2.HeaderMatch(name="subject", value="charlie"))),
    )
    await timed(
        f"search {search_messages:,}: UNSEEN", 10, search(store_pb2.SearchKey(flag_unset="\\Seen"))
    )
    await timed(
        f"search {search_messages:,}: BODY foxtrot", 5, search(store_pb2.SearchKey(body="foxtrot"))
    )
    await ch.close()


def main(
    backends: list[str],
    messages: int = 400,
    search_messages: int = 10_000,
    distributed_search_messages: int = 2_000,
) -> None:
    for backend in backends:
        print(f"\n== store gRPC API, {backend} backend")
        if backend == "embedded":
            with store_process({"POSTMESH_STORE_BACKEND": "sqlite"}) as (address, security):
                asyncio.run(run(address, security, messages, search_messages))
        else:
            with (
                FerretDB(fsync=True) as mongo,
                store_process(
                    {
                        "POSTMESH_STORE_BACKEND": "mongodb",
                        "POSTMESH_MONGODB_URL": mongo.url,
                        "POSTMESH_MONGODB_DATABASE": "bench_" + uuid.uuid4().hex[:8],
                    }
                ) as (address, security),
            ):
                asyncio.run(run(address, security, messages, distributed_search_messages))
