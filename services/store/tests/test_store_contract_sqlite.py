"""The repository contract on the embedded SQLite backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("postmesh.store.contract_suite")

from postmesh.store.contract_suite import StoreContract  # noqa: E402
from postmesh.store.sqlite import SqliteStoreRepository  # noqa: E402


class TestSqliteStoreContract(StoreContract):
    @pytest.fixture
    async def repo(self, tmp_path: Path) -> AsyncIterator[SqliteStoreRepository]:
        repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
        await repo.open()
        yield repo
        await repo.close()
