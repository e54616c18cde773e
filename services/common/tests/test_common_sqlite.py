from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from postmesh.common.sqlite import MAX_NON_DURABLE, SqliteConnection


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


async def test_concurrent_transactions_share_a_commit_each_all_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transactions queued while the thread is busy commit together; one that raises is
    rolled back alone and its caller gets its own error, the others' work is durable. The
    group's outcomes (results and errors alike) reach the event loop in one hand-off."""
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    loop = asyncio.get_running_loop()
    handed: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[..., object], *args: object) -> asyncio.Handle:
        handed.append(callback)
        return original(callback, *args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    started, release = threading.Event(), threading.Event()

    def blocker(c: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)
        c.execute("INSERT INTO t VALUES (0)")

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def fn(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO t VALUES (?)", (n,))
            if n == 3:
                raise ValueError("three")
            return n

        return fn

    first = asyncio.create_task(db.transaction(blocker))
    await asyncio.to_thread(started.wait, 5)
    handed.clear()  # the hand-offs of to_thread itself
    group = [asyncio.create_task(db.transaction(insert(n))) for n in range(1, 6)]
    await asyncio.sleep(0.05)
    release.set()
    await first
    results = await asyncio.gather(*group, return_exceptions=True)
    assert results[:2] == [1, 2] and results[3:] == [4, 5]
    assert isinstance(results[2], ValueError)
    assert len(handed) == 2  # the blocker's group, then the five
    other = sqlite3.connect(tmp_path / "x.sqlite3")  # what another process sees
    assert [r[0] for r in other.execute("SELECT n FROM t ORDER BY n")] == [0, 1, 2, 4, 5]
    other.close()
    await db.close()


async def test_a_transaction_cancelled_before_its_turn_never_runs(tmp_path: Path) -> None:
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    started, release = threading.Event(), threading.Event()

    def blocker(c: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    first = asyncio.create_task(db.transaction(blocker))
    await asyncio.to_thread(started.wait, 5)
    waiting = asyncio.create_task(db.transaction(lambda c: c.execute("INSERT INTO t VALUES (9)")))
    kept = asyncio.create_task(db.transaction(lambda c: c.execute("INSERT INTO t VALUES (8)")))
    await asyncio.sleep(0.05)
    waiting.cancel()
    # Cancelling reaches the queued call through the event loop (wrap_future's callback), so
    # the test waits for it before letting the worker go on: else the worker may take the
    # call first and run it, as it would for a caller cancelled mid-call.
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await first
    await kept
    assert await db.run(lambda c: [r[0] for r in c.execute("SELECT n FROM t")]) == [8]
    await db.close()


# PRAGMA synchronous as SQLite reports it: 1 NORMAL (no fsync at COMMIT in WAL mode), 2 FULL.
NORMAL, FULL = 1, 2


def _insert_reporting_level(n: int) -> Callable[[sqlite3.Connection], int]:
    """A transaction that inserts ``n`` and returns the synchronous level its COMMIT runs at."""

    def fn(c: sqlite3.Connection) -> int:
        c.execute("INSERT INTO t VALUES (?)", (n,))
        return int(c.execute("PRAGMA synchronous").fetchone()[0])

    return fn


async def _level(db: SqliteConnection) -> int:
    return int(await db.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]))


async def test_non_durable_transactions_commit_without_fsync_and_others_with(
    tmp_path: Path,
) -> None:
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    assert await _level(db) == FULL
    assert await db.transaction(_insert_reporting_level(1)) == FULL
    assert await db.transaction(_insert_reporting_level(2), durable=False) == NORMAL
    # Back to FULL at once: autocommit statements of run() never inherit the relaxed level.
    assert await _level(db) == FULL
    assert await db.transaction(_insert_reporting_level(3)) == FULL
    other = sqlite3.connect(tmp_path / "x.sqlite3")  # committed all the same
    assert [r[0] for r in other.execute("SELECT n FROM t ORDER BY n")] == [1, 2, 3]
    other.close()
    await db.close()


async def test_a_group_with_one_durable_transaction_commits_durably(tmp_path: Path) -> None:
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    started, release = threading.Event(), threading.Event()

    def blocker(c: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    first = asyncio.create_task(db.transaction(blocker, durable=False))
    await asyncio.to_thread(started.wait, 5)
    group = [
        asyncio.create_task(db.transaction(_insert_reporting_level(1), durable=False)),
        asyncio.create_task(db.transaction(_insert_reporting_level(2))),
        asyncio.create_task(db.transaction(_insert_reporting_level(3), durable=False)),
    ]
    await asyncio.sleep(0.05)
    release.set()
    await first
    assert await asyncio.gather(*group) == [FULL, FULL, FULL]
    await db.close()


async def test_at_most_max_non_durable_commits_in_a_row(tmp_path: Path) -> None:
    """The transaction that would be the (MAX_NON_DURABLE + 1)th non-durable one since the last
    durable commit is committed durably, which makes all the earlier ones durable too."""
    db = SqliteConnection(tmp_path / "x.sqlite3", _setup)
    await db.open()
    levels = [
        await db.transaction(_insert_reporting_level(n), durable=False)
        for n in range(2 * MAX_NON_DURABLE + 2)
    ]
    assert levels[:MAX_NON_DURABLE] == [NORMAL] * MAX_NON_DURABLE
    assert levels[MAX_NON_DURABLE] == FULL
    assert levels[MAX_NON_DURABLE + 1 : 2 * MAX_NON_DURABLE + 1] == [NORMAL] * MAX_NON_DURABLE
    assert levels[2 * MAX_NON_DURABLE + 1] == FULL
    # A durable transaction restarts the count.
    for n in range(10):
        assert await db.transaction(_insert_reporting_level(n), durable=False) == NORMAL
    assert await db.transaction(_insert_reporting_level(0)) == FULL
    levels = [
        await db.transaction(_insert_reporting_level(n), durable=False)
        for n in range(MAX_NON_DURABLE + 1)
    ]
    assert levels == [NORMAL] * MAX_NON_DURABLE + [FULL]
    # A group counts all its transactions: one that would cross the bound is durable whole.
    started, release = threading.Event(), threading.Event()

    def blocker(c: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    for n in range(MAX_NON_DURABLE - 2):
        await db.transaction(_insert_reporting_level(n), durable=False)
    # The (MAX_NON_DURABLE - 1)th, then a group of two.
    first = asyncio.create_task(db.transaction(blocker, durable=False))
    await asyncio.to_thread(started.wait, 5)
    group = [
        asyncio.create_task(db.transaction(_insert_reporting_level(n), durable=False))
        for n in range(2)
    ]
    await asyncio.sleep(0.05)
    release.set()
    await first
    assert await asyncio.gather(*group) == [FULL, FULL]
    await db.close()
