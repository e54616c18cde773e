"""SQLite's plans for the store's key reads (ADR 0036): every SELECT that a UID-range read, a
flag listing, an UNSEEN or SUBJECT search, GetMessageMeta of a range, a Deliver under a quota
and ClaimDue run, taken from the connection's trace as executed (parameters inlined), goes to
its rows through the primary key or an index (EXPLAIN QUERY PLAN "SEARCH ... USING ..."),
never through a full "SCAN" of a table."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.contract_suite import message
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.queue.model import NewEntry
from postmesh.store.queue.sqlite import SqliteQueueRepository
from postmesh.store.sqlite import SqliteStoreRepository

# A full pass over a table (or index). Plans name tables by their alias (``SEARCH m USING
# PRIMARY KEY``), so any SCAN counts: none of these reads needs one.
FULL_SCAN = re.compile(r"^SCAN (?!CONSTANT ROW)")


@dataclass
class Seeded:
    repo: SqliteStoreRepository
    queue: SqliteQueueRepository


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[Seeded]:
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    queue = SqliteQueueRepository(path, db=repo.connection)
    await queue.open()
    for user in ("u", "v", "w"):
        for n in range(1, 31):
            await repo.deliver(Delivery(f"{user}{n}", user, "", content=message(n)))
    await repo.store_flags("u", INBOX, list(range(1, 11)), FlagsMode.ADD, ["\\Seen"])
    await repo.set_quota("u", 10_000_000, 1000)
    for n in range(20):
        await queue.enqueue(NewEntry(f"Q{n}", f"r{n}@example.org", b"env", "b" * 64))
    await repo.connection.run(lambda c: c.execute("ANALYZE"))
    yield Seeded(repo, queue)
    await queue.close()
    await repo.close()


OPERATIONS: dict[str, Callable[[Seeded], Awaitable[object]]] = {
    "UID-range read": lambda s: s.repo.list_messages("u", INBOX, 10, 10),
    "flag listing": lambda s: s.repo.list_flags("u", INBOX, 10, 10),
    "UNSEEN search": lambda s: s.repo.search("u", INBOX, store_pb2.SearchKey(flag_unset="\\Seen")),
    "SUBJECT search": lambda s: s.repo.search(
        "u", INBOX, store_pb2.SearchKey(header=store_pb2.HeaderMatch(name="subject", value="7"))
    ),
    "GetMessageMeta of a range": lambda s: s.repo.get_meta("u", INBOX, range(5, 25)),
    "quota check (Deliver under a limit)": lambda s: s.repo.deliver(
        Delivery("new", "u", "", content=message(99))
    ),
    "ClaimDue": lambda s: s.queue.claim_due("worker", 5, 60),
}


async def plans(s: Seeded, op: Callable[[Seeded], Awaitable[object]]) -> dict[str, list[str]]:
    """SELECT (as executed, parameters inlined) -> its EXPLAIN QUERY PLAN lines."""
    statements: list[str] = []
    await s.repo.connection.run(lambda c: c.set_trace_callback(statements.append))
    try:
        await op(s)
    finally:
        await s.repo.connection.run(lambda c: c.set_trace_callback(None))
    selects = [q for q in statements if q.lstrip().upper().startswith(("SELECT", "WITH"))]

    def explain(c: object) -> dict[str, list[str]]:
        import sqlite3

        assert isinstance(c, sqlite3.Connection)
        return {q: [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + q)] for q in selects}

    return await s.repo.connection.run(explain)


@pytest.mark.parametrize("name", list(OPERATIONS))
async def test_key_reads_use_indexes(seeded: Seeded, name: str) -> None:
    found = await plans(seeded, OPERATIONS[name])
    assert found, f"{name}: no SELECT traced"
    scans = {q: [line for line in lines if FULL_SCAN.match(line)] for q, lines in found.items()}
    assert not {q: s for q, s in scans.items() if s}, scans
