"""Enqueue of inline content on SQLite: the blob and the entry in one transaction (both or
neither, one commit), pinned as PutBlob pins it; a repeat writes nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postmesh.store.blobs import BytesSource
from postmesh.store.errors import InvalidArgument
from postmesh.store.queue.factory import create_queue_repository
from postmesh.store.queue.model import NewEntry
from postmesh.store.queue.sqlite import SqliteQueueRepository
from postmesh.store.settings import StoreSettings
from postmesh.store.sqlite import SqliteStoreRepository

CONTENT = b"From: a@example.org\r\nSubject: relay\r\n\r\nbody\r\n"


@pytest.fixture
async def repos(
    tmp_path: Path,
) -> AsyncIterator[tuple[SqliteStoreRepository, SqliteQueueRepository]]:
    settings = StoreSettings(data_dir=tmp_path, bus="sqlite", grpc_plaintext=True)
    store = SqliteStoreRepository(settings.data_path(settings.store_sqlite_path))
    await store.open()
    queue = create_queue_repository(settings, store)
    assert isinstance(queue, SqliteQueueRepository)
    await queue.open()
    yield store, queue
    await queue.close()
    await store.close()


def entry(source: BytesSource, rcpt: str = "bob@example.net") -> NewEntry:
    return NewEntry("Q1", rcpt, b"envelope", source.blob_id, lease_owner="me", lease_seconds=60)


async def pinned_until(store: SqliteStoreRepository, blob_id: str) -> int | None:
    row = await store.connection.run(
        lambda c: c.execute("SELECT pinned_until FROM blobs WHERE id = ?", (blob_id,)).fetchone()
    )
    return None if row is None else int(row[0])


async def test_the_store_s_own_file_writes_content_with_the_entry(
    repos: tuple[SqliteStoreRepository, SqliteQueueRepository],
) -> None:
    store, queue = repos
    assert queue.writes_content
    source = BytesSource(CONTENT)
    pin = int(time.time()) + 3600
    stored, dup = await queue.enqueue_with_content(entry(source), source, pin)
    assert not dup and stored.blob_id == source.blob_id and stored.lease_owner == "me"
    chunks = await store.read_blob(source.blob_id)
    assert b"".join([c async for c in chunks]) == CONTENT
    assert await pinned_until(store, source.blob_id) == pin
    assert await store.blob_refcount(source.blob_id) == 0  # pinned, not referenced
    # A repeat (the bus repeating a record) changes nothing, not even the pin.
    again, dup = await queue.enqueue_with_content(entry(source), source, pin + 100)
    assert dup and again == stored
    assert await pinned_until(store, source.blob_id) == pin


async def test_content_and_entry_are_written_together_or_not_at_all(
    repos: tuple[SqliteStoreRepository, SqliteQueueRepository],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, queue = repos
    source = BytesSource(CONTENT)

    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqliteQueueRepository, "_insert", classmethod(broken))
    with pytest.raises(sqlite3.OperationalError):
        await queue.enqueue_with_content(entry(source), source, int(time.time()) + 60)
    assert await pinned_until(store, source.blob_id) is None  # the blob was rolled back
    assert await queue.get("Q1", "bob@example.net") is None


async def test_a_blob_id_that_is_not_the_content_s_address_is_refused(
    repos: tuple[SqliteStoreRepository, SqliteQueueRepository],
) -> None:
    _store, queue = repos
    source = BytesSource(CONTENT)
    other = BytesSource(b"other content\r\n")
    with pytest.raises(Exception, match="address"):
        await queue.enqueue_with_content(entry(other), source, int(time.time()) + 60)


async def test_a_queue_on_a_connection_of_its_own_does_not_write_content(tmp_path: Path) -> None:
    queue = SqliteQueueRepository(tmp_path / "q.sqlite3")
    assert not queue.writes_content


async def test_a_stored_blob_is_pinned_with_the_entry_and_an_unknown_one_refused(
    repos: tuple[SqliteStoreRepository, SqliteQueueRepository],
) -> None:
    """Enqueue by blob_id (the edge's PutBlob): the pin is extended in the entry's own
    transaction; an unknown blob leaves no entry."""
    store, queue = repos

    async def chunks() -> AsyncIterator[bytes]:
        yield CONTENT

    info = await store.put_blob(chunks())
    first = await pinned_until(store, info.blob_id)
    assert first is not None
    source = BytesSource(CONTENT)
    stored, dup = await queue.enqueue_with_content(entry(source), None, first + 3600)
    assert not dup and stored.blob_id == info.blob_id
    assert await pinned_until(store, info.blob_id) == first + 3600
    missing = BytesSource(b"never uploaded\r\n")
    with pytest.raises(InvalidArgument, match="unknown blob_id"):
        await queue.enqueue_with_content(entry(missing, "carol@example.net"), None, first)
    assert await queue.get("Q1", "carol@example.net") is None
