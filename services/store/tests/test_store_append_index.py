"""APPEND parses the content it is given rather than look up a stored index first (ADR 0056):
content an IMAP client appends is rarely one the store already has, so the look-up was nearly
always a miss and a trip to the database thread. What is stored is the same either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from index_lookups import Counted, mail

from postmesh.api.store.v1 import store_pb2
from postmesh.store import repository
from postmesh.store.model import INBOX, Delivery
from postmesh.store.sqlite import SqliteStoreRepository


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.mark.parametrize("size", [20_000, 200_000])
async def test_append_parses_without_a_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        known = mail("known", size)
        await repo.deliver(Delivery("q1", "u", "", content=known))
        counted = Counted(repo, monkeypatch)
        # Content the store already has (delivered above) and content it has not.
        for content in (known, mail("new", size)):
            r = await repo.append("u", INBOX, [], 0, len(content), one(content))
            ((uid, meta),) = await repo.get_meta("u", INBOX, [r.uid])
            subject = store_pb2.MessageMeta.FromString(meta).envelope.subject
            assert (uid, subject) == (r.uid, "known" if content is known else "new")
            hits = await repo.search("u", INBOX, store_pb2.SearchKey(body="fills the message"))
            assert r.uid in hits.uids
        assert counted.looked_up == []
    finally:
        await repo.close()


async def test_a_larger_append_still_looks_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the bound a stored index saves a long parse: it is asked for first."""
    monkeypatch.setattr(repository, "APPEND_PARSE_RATHER_THAN_LOOK_UP", 1000)
    monkeypatch.setattr(SqliteStoreRepository, "parse_rather_than_look_up", 1000)
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        content = mail("large", 20_000)
        await repo.deliver(Delivery("q1", "u", "", content=content))
        # A new process: nothing parsed lately is kept in it (ADR 0061).
        await repo.close()
        repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
        await repo.open()
        counted = Counted(repo, monkeypatch)
        await repo.append("u", INBOX, [], 0, len(content), one(content))
        assert len(counted.looked_up) == 1
    finally:
        await repo.close()
