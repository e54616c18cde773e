"""``python -m tests.bench.consume``: the bus's consuming path on its own (ADR 66), in one
process on the embedded (SQLite) bus, with ``concurrency=32`` as delivery uses it. The handler
sleeps 2 ms, and 200 ms for one record in 50 (a slow Deliver, a retry).

- drain: 3,000 records already published; records/s and the process's CPU per record.
- paced: 1,000 records published at 100/s; publish -> handled latency of the 2 ms records
  (p50/p90/p99): what a slow record does to the records fetched with it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from postmesh.common.bus import BusRecord
from postmesh.common.bus.sqlite import SqliteBus
from tests.bench.stats import pct

CONCURRENCY = 32
SLOW_EVERY = 50


def handler(
    done: list[tuple[float, bool]], published: dict[str, float]
) -> Callable[[BusRecord], Awaitable[None]]:
    async def handle(r: BusRecord) -> None:
        slow = int(r.key[1:]) % SLOW_EVERY == 0
        await asyncio.sleep(0.2 if slow else 0.002)
        done.append((time.monotonic() - published.get(r.key, 0.0), slow))

    return handle


async def until(done: list[tuple[float, bool]], n: int) -> None:
    while len(done) < n:  # noqa: ASYNC110 (polling the handler's list)
        await asyncio.sleep(0.005)


async def drain(path: Path, n: int = 3000) -> None:
    bus = SqliteBus(path)
    await bus.start()
    for i in range(0, n, 100):
        await asyncio.gather(*(bus.publish("t", f"k{j}", b"x" * 200) for j in range(i, i + 100)))
    done: list[tuple[float, bool]] = []
    consumer = SqliteBus(path)
    await consumer.start()
    t0, c0 = time.monotonic(), time.process_time()
    task = asyncio.create_task(
        consumer.consume(["t"], "g", handler(done, {}), concurrency=CONCURRENCY)
    )
    await until(done, n)
    t1, c1 = time.monotonic(), time.process_time()
    await consumer.stop()
    await task
    await bus.stop()
    print(
        f"drain  {n} records  {n / (t1 - t0):7.1f} rec/s   CPU {1e6 * (c1 - c0) / n:6.1f} us/record"
    )


async def paced(path: Path, n: int = 1000, rate: float = 100.0) -> None:
    bus = SqliteBus(path)
    await bus.start()
    consumer = SqliteBus(path)
    await consumer.start()
    done: list[tuple[float, bool]] = []
    published: dict[str, float] = {}
    task = asyncio.create_task(
        consumer.consume(["t"], "g", handler(done, published), concurrency=CONCURRENCY)
    )
    await asyncio.sleep(0.3)
    start = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        published[f"k{i}"] = time.monotonic()
        await bus.publish("t", f"k{i}", b"x" * 200)
    await until(done, n)
    await consumer.stop()
    await task
    await bus.stop()
    fast = sorted(1000 * latency for latency, slow in done if not slow)
    print(
        f"paced  {n} at {rate:.0f}/s  publish->handled, 2 ms records: "
        f"p50 {pct(fast, 50):6.1f} ms  p90 {pct(fast, 90):6.1f} ms  p99 {pct(fast, 99):6.1f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(drain(Path(d) / "drain.sqlite3"))
        asyncio.run(paced(Path(d) / "paced.sqlite3"))


if __name__ == "__main__":
    main()
