"""The queue/lock contract on the embedded SQLite backend (separate connections to one file
stand in for separate replicas)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("postmesh.store.queue.contract_suite")

from postmesh.store.queue.contract_suite import FakeClock, OpenRepo, QueueContract  # noqa: E402
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
