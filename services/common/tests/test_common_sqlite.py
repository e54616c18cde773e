from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from postmesh.common.sqlite import SqliteConnection


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")


async def test_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()

    def fails(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise ValueError("abort")

    with pytest.raises(ValueError):
        await db.transaction(fails)
    assert await db.run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
    await db.close()


async def test_a_cancelled_call_never_interleaves_with_the_next(tmp_path: Path) -> None:
    """A caller cancelled mid-transaction (a gRPC deadline) must not let the next transaction
    start on the same connection while the first still runs in its thread."""
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    started, release = threading.Event(), threading.Event()

    def slow(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        started.set()
        release.wait(5)
        c.execute("INSERT INTO t VALUES (2)")

    task = asyncio.create_task(db.transaction(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = asyncio.create_task(db.transaction(lambda c: c.execute("INSERT INTO t VALUES (3)")))
    await asyncio.sleep(0.05)
    assert not second.done()  # queued behind the first, not interleaved
    release.set()
    await second
    rows = await db.run(lambda c: [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")])
    assert rows == [1, 2, 3]
    await db.close()
    assert not await db.ping()
