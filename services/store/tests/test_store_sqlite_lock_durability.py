"""ADR 0052: a maildrop lock is taken with an fsync and released without one. A release lost in
a power cut leaves only the lease to run out; a lost acquire could let two sessions hold the
maildrop, so it stays durable."""

from __future__ import annotations

from pathlib import Path

from sqlite_commits import commit_levels

from postmesh.store.queue.sqlite import SqliteQueueRepository
from postmesh.store.sqlite import SqliteStoreRepository


async def test_acquire_and_renew_are_durable_release_is_not(tmp_path: Path) -> None:
    store = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await store.open()
    queue = SqliteQueueRepository(tmp_path / "store.sqlite3", db=store.connection)
    await queue.open()
    levels = await commit_levels(store.connection)
    assert (await queue.acquire_lock("u", "s1", 60)).granted
    assert (await queue.renew_lock("u", "s1", 60)).granted
    assert await queue.release_lock("u", "s1")
    assert levels == ["FULL", "FULL", "NORMAL"]
    # Released: another session takes it at once (no lease to wait out).
    assert (await queue.acquire_lock("u", "s2", 60)).granted
    await queue.close()
    await store.close()
