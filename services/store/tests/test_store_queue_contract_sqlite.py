"""The queue/lock contract on the embedded SQLite backend (separate connections to one file
stand in for separate replicas)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("postmesh.store.queue.contract_suite")

from postmesh.store.queue.contract_suite import (  # noqa: E402
    BLOB,
    FakeClock,
    OpenRepo,
    QueueContract,
)
from postmesh.store.queue.repository import QueueRepository  # noqa: E402
from postmesh.store.queue.sqlite import SqliteQueueRepository  # noqa: E402


class TestSqliteQueueContract(QueueContract):
    @pytest.fixture
    async def open_repo(self, tmp_path: Path) -> AsyncIterator[OpenRepo]:
        opened: list[SqliteQueueRepository] = []

        async def open_repo(clock: FakeClock) -> QueueRepository:
            repo = SqliteQueueRepository(tmp_path / "store.sqlite3", clock=clock)
            await repo.open()
            opened.append(repo)
            return repo

        yield open_repo
        for repo in opened:
            await repo.close()


async def test_a_queue_made_before_delay_notices_gains_the_column(tmp_path: Path) -> None:
    """An existing store file (entries waiting in it) is upgraded at open: its entries read
    as not yet notified, and a notice is recorded from then on."""
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE queue_entries (
                queue_id TEXT NOT NULL, recipient TEXT NOT NULL, envelope BLOB NOT NULL,
                blob_id TEXT NOT NULL, attempts INTEGER NOT NULL,
                next_attempt_at INTEGER NOT NULL, last_error TEXT NOT NULL,
                lease_owner TEXT NOT NULL DEFAULT '', lease_until INTEGER NOT NULL DEFAULT 0,
                ready_at INTEGER NOT NULL, created_at INTEGER NOT NULL,
                PRIMARY KEY (queue_id, recipient)
            ) WITHOUT ROWID;
            """
        )
        conn.execute(
            "INSERT INTO queue_entries VALUES ('Q1', 'bob@example.net', x'00', ?, 1, 0,"
            " '451 later', '', 0, 0, 1000)",
            (BLOB,),
        )
    clock = FakeClock()
    repo = SqliteQueueRepository(path, clock=clock)
    await repo.open()
    try:
        old = await repo.get("Q1", "bob@example.net")
        assert old is not None and (old.attempts, old.delay_notified_at_ms) == (1, 0)
        await repo.claim_due("a", 1, 60)
        after = await repo.reschedule("Q1", "bob@example.net", "a", clock.ms, "451", clock.ms)
        assert after.delay_notified_at_ms == clock.ms
    finally:
        await repo.close()
    again = SqliteQueueRepository(path, clock=clock)  # opening twice migrates once
    await again.open()
    assert (await again.get("Q1", "bob@example.net")) == after
    await again.close()
