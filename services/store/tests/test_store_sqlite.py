"""What only the SQLite backend promises: durability across reopen, WAL, all-or-nothing writes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postmesh.store.contract_suite import content_of, message
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.sqlite import SqliteStoreRepository


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    first = await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    await repo.close()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

    repo = SqliteStoreRepository(path)
    await repo.open()
    again = await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    assert (again.duplicate, again.uid, again.uidvalidity) == (True, 1, first.uidvalidity)
    second = await repo.deliver(Delivery("q2", "u", "", content=message(2)))
    assert (second.uid, second.uidvalidity) == (2, first.uidvalidity)
    await repo.close()


async def test_failed_deliver_rolls_back_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    original = SqliteStoreRepository._store_blob

    def store_then_fail(*args: Any) -> None:
        original(*args)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteStoreRepository, "_store_blob", staticmethod(store_then_fail))
    content = message(1)
    with pytest.raises(sqlite3.OperationalError):
        await repo.deliver(Delivery("q1", "u", "", content=content))
    monkeypatch.undo()
    # Not even the INBOX or the blob the failed transaction wrote first remains.
    assert await repo.list_mailboxes("u") == []
    r = await repo.deliver(Delivery("q1", "u", "", content=content))
    assert (r.uid, r.duplicate, r.mailbox_created) == (1, False, True)
    (m,), _ = await repo.list_messages("u", INBOX, 0, 10)
    assert await repo.blob_refcount(m.blob_id) == 1
    await repo.close()


async def test_unreferenced_upload_goes_once_its_pin_expired(tmp_path: Path) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3", upload_pin_seconds=-1)
    await repo.open()
    content = message(1)
    info = await repo.put_blob(one(content))
    r = await repo.deliver(Delivery("q1", "u", "", blob_id=info.blob_id))
    assert await content_of(repo, "u", INBOX, r.uid) == content
    await repo.store_flags("u", INBOX, [r.uid], FlagsMode.ADD, ["\\Deleted"])
    await repo.expunge("u", INBOX)
    assert await repo.blob_refcount(info.blob_id) is None
    await repo.close()
