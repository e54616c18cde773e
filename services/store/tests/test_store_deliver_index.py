"""Deliver parses content at hand of up to 256 KiB rather than look up a stored index (a trip
to the database that nearly every delivery missed; ADR 0061 on SQLite, ADR 0069 on MongoDB:
the rule is the repository base's, tested here on SQLite), and the later recipients of one
message take the first's parse from the process (ADR 0061). What is stored is the same either
way."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from index_lookups import Counted, mail

from postmesh.api.store.v1 import store_pb2
from postmesh.store import indexing
from postmesh.store.model import INBOX, Delivery, MessageIndex
from postmesh.store.sqlite import SqliteStoreRepository


async def subject_and_hit(repo: SqliteStoreRepository, user: str, uid: int) -> tuple[str, bool]:
    ((_, meta),) = await repo.get_meta(user, INBOX, [uid])
    hits = await repo.search(user, INBOX, store_pb2.SearchKey(body="fills the message"))
    return store_pb2.MessageMeta.FromString(meta).envelope.subject, uid in hits.uids


@pytest.mark.parametrize("size", [4_000, 100_000, 250_000])
async def test_deliver_parses_once_for_all_recipients_without_a_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        counted = Counted(repo, monkeypatch)
        content = mail("hello", size)
        for user in ("a", "b", "c"):
            r = await repo.deliver(Delivery("q1", user, "", content=content))
            assert not r.duplicate
            assert await subject_and_hit(repo, user, r.uid) == ("hello", True)
        assert (counted.looked_up, counted.parsed) == ([], 1)
    finally:
        await repo.close()


async def test_a_restarted_store_parses_again_and_stores_the_same(tmp_path: Path) -> None:
    """Nothing kept survives the process: a later recipient after a restart finds no kept
    parse, parses again, and its message reads the same."""
    content = mail("again", 100_000)
    for user in ("a", "b"):
        repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
        await repo.open()
        try:
            r = await repo.deliver(Delivery("q1", user, "", content=content))
            assert await subject_and_hit(repo, user, r.uid) == ("again", True)
        finally:
            await repo.close()


async def test_larger_content_still_looks_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the bound a stored index saves a long parse: it is asked for first."""
    content = mail("large", 300_000)
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        await repo.deliver(Delivery("q1", "a", "", content=content))
        await repo.close()
        repo = SqliteStoreRepository(tmp_path / "store.sqlite3")  # nothing kept in process
        await repo.open()
        counted = Counted(repo, monkeypatch)
        r = await repo.deliver(Delivery("q1", "b", "", content=content))
        assert await subject_and_hit(repo, "b", r.uid) == ("large", True)
        assert (len(counted.looked_up), counted.parsed) == (1, 0)
    finally:
        await repo.close()


async def test_larger_content_is_parsed_on_one_thread_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing holds the GIL: concurrent Delivers of content above PARSE_ON_LOOP queue for
    one parsing thread rather than contend for the GIL from several (ADR 0061)."""
    real_parse = indexing.index_content
    lock = threading.Lock()
    running, most, threads = 0, 0, set()

    def parse(raw: bytes) -> MessageIndex:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough for a second thread, if any, to start a parse too
        try:
            return real_parse(raw)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(indexing, "index_content", parse)
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        results = await asyncio.gather(
            *(
                repo.deliver(Delivery(f"q{i}", "a", "", content=mail(f"m{i}", 20_000)))
                for i in range(8)
            )
        )
        assert sorted(r.uid for r in results) == list(range(1, 9))
        assert most == 1
        assert len(threads) == 1 and threads.pop().startswith("parse")
    finally:
        await repo.close()
