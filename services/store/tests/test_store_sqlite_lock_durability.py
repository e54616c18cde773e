"""ADR 0052: a maildrop lock is taken with an fsync and released without one. A release lost in
a power cut leaves only the lease to run out; a lost acquire could let two sessions hold the
maildrop, so it stays durable."""

from __future__ import annotations

from pathlib import Path

from postmesh.store.queue.sqlite import SqliteQueueRepository
from postmesh.store.sqlite import SqliteStoreRepository


async def test_acquire_and_renew_are_durable_release_is_not(tmp_path: Path) -> None:
    store = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await store.open()
    queue = SqliteQueueRepository(tmp_path / "store.sqlite3", db=store.connection)
    await queue.open()
    levels: list[str] = []
    level = ["FULL"]

    def trace(statement: str) -> None:
        s = statement.strip().upper()
        if s.startswith("PRAGMA SYNCHRONOUS="):
            level[0] = s.split("=", 1)[1]
        elif s == "COMMIT":
            levels.append(level[0])

    await store.connection.run(lambda c: c.set_trace_callback(trace))
    assert (await queue.acquire_lock("u", "s1", 60)).granted
    assert (await queue.renew_lock("u", "s1", 60)).granted
    assert await queue.release_lock("u", "s1")
    assert levels == ["FULL", "FULL", "NORMAL"]
    # Released: another session takes it at once (no lease to wait out).
    assert (await queue.acquire_lock("u", "s2", 60)).granted
    await queue.close()
    await store.close()
