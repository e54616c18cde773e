from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from postmesh.common.bus import BusRecord
from postmesh.common.bus.sqlite import SqliteBus


async def collect(path: Path, group: str | None, n: int) -> list[BusRecord]:
    """Consume with a bus of its own until ``n`` records arrived, then stop it gracefully (as
    SIGTERM does: the batch in hand is finished and committed)."""
    bus = SqliteBus(path)
    await bus.start()
    got: list[BusRecord] = []
    done = asyncio.Event()

    async def handler(r: BusRecord) -> None:
        got.append(r)
        if len(got) >= n:
            done.set()

    task = asyncio.create_task(bus.consume(["t"], group, handler, concurrency=4))
    await asyncio.wait_for(done.wait(), 10)
    await bus.stop()
    await asyncio.wait_for(task, 10)
    return got


async def test_group_resumes_after_committed_offset(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = SqliteBus(path)
    await bus.start()
    for i in range(3):
        await bus.publish("t", f"k{i}", f"v{i}".encode())
    first = await collect(path, "g", 3)
    assert sorted((r.key, r.value) for r in first) == [("k0", b"v0"), ("k1", b"v1"), ("k2", b"v2")]
    await bus.publish("t", "k3", b"v3")
    again = await collect(path, "g", 1)
    assert [r.key for r in again] == ["k3"]  # committed records are not redelivered
    await bus.stop()


async def test_failed_handler_is_retried_not_skipped(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.sqlite3")
    await bus.start()
    await bus.publish("t", "k", b"v")
    calls = 0
    done = asyncio.Event()

    async def flaky(r: BusRecord) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store down")
        done.set()

    task = asyncio.create_task(bus.consume(["t"], "g", flaky))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert calls == 2
    await bus.stop()


async def test_two_processes_share_the_file(tmp_path: Path) -> None:
    """A second bus object on the same file (as a second process would) sees the records."""
    writer = SqliteBus(tmp_path / "b.sqlite3")
    await writer.start()
    await writer.publish("t", "k", b"hello")
    [rec] = await collect(tmp_path / "b.sqlite3", None, 1)
    assert rec.value == b"hello"
    await writer.stop()
