"""What only the SQLite backend promises: durability across reopen, WAL, all-or-nothing writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store import leftovers as lo
from postmesh.store.contract_suite import content_of, message
from postmesh.store.errors import UnknownUser
from postmesh.store.leftovers import Cutoffs
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.sqlite import SqliteStoreRepository, rows
from postmesh.store.sqlite.schema import SCHEMA_VERSION


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
    original = rows.store_blob

    def store_then_fail(*args: Any) -> None:
        original(*args)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rows, "store_blob", store_then_fail)
    content = message(1)
    with pytest.raises(sqlite3.OperationalError):
        await repo.deliver(Delivery("q1", "u", "", content=content))
    monkeypatch.undo()
    # Not even the user, the INBOX or the blob the failed transaction wrote first remains.
    with pytest.raises(UnknownUser):
        await repo.list_mailboxes("u")
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


# The schema of version 1 (before users, subscriptions, noselect parents and parsed indexes).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    special_use TEXT NOT NULL DEFAULT '',
    subscribed INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    UNIQUE (user, name)
);
-- Content-addressed (sha256 hex). refcount counts messages; pinned_until protects a PutBlob
-- upload that no message references yet.
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refcount INTEGER NOT NULL,
    pinned_until INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, n)
) WITHOUT ROWID;
-- flags: JSON array in canonical order; seen/deleted mirror two of them for counts and EXPUNGE.
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id),
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    seen INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs (id),
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
-- Idempotency of Deliver: one row per (queue id, user, mailbox), kept after an expunge so a
-- redelivered record does not bring a deleted message back.
CREATE TABLE IF NOT EXISTS deliveries (
    queue_id TEXT NOT NULL,
    user TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    uidvalidity INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (queue_id, user, mailbox)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at);
"""


def v1_file(path: Path, contents: list[bytes]) -> None:
    """A version-1 store file: INBOX of user u holding ``contents``, none of them indexed."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    n = len(contents)
    conn.execute(
        "INSERT INTO mailboxes (id, user, name, uidvalidity, uidnext, highestmodseq, subscribed,"
        " created_at) VALUES (1, 'u', 'INBOX', 1700000000, ?, ?, 1, 0)",
        (n + 1, n + 1),
    )
    for uid, content in enumerate(contents, start=1):
        blob_id = hashlib.sha256(content).hexdigest()
        conn.execute("INSERT INTO blobs VALUES (?, ?, 1, 0, 0)", (blob_id, len(content)))
        conn.execute("INSERT INTO blob_chunks VALUES (?, 0, ?)", (blob_id, content))
        conn.execute(
            "INSERT INTO messages VALUES (1, ?, ?, '[]', 0, 0, 1700000000, ?, ?)",
            (uid, uid + 1, len(content), blob_id),
        )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


async def test_version_1_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    content = b"Subject: from v1\r\nDate: Tue, 10 Mar 2026 09:00:00 +0000\r\n\r\nold body\r\n"
    blob_id = hashlib.sha256(content).hexdigest()
    v1_file(path, [content])

    repo = SqliteStoreRepository(path)
    await repo.open()
    (box,) = await repo.list_mailboxes("u")  # known, as it was, subscribed
    assert (box.name, box.uidvalidity, box.messages, box.subscribed) == (
        INBOX, 1700000000, 1, True,
    )  # fmt: skip
    # Parsed on first use, then kept.
    ((uid, meta),) = await repo.get_meta("u", INBOX, [1])
    assert (uid, store_pb2.MessageMeta.FromString(meta).envelope.subject) == (1, "from v1")
    assert await repo._get_index(blob_id) is not None
    body = store_pb2.SearchKey(body="old body")
    assert (await repo.search("u", INBOX, body)).uids == [1]
    # New mailboxes get UIDVALIDITYs above the old ones.
    assert (await repo.create_mailbox("u", "New")).mailbox.uidvalidity > 1700000000
    await repo.close()


async def test_upgrade_indexes_header_fields_of_stored_mail(tmp_path: Path) -> None:
    """A version-2 file (header values only inside the search documents) gets its header
    fields indexed on open, and a content stored before indexing is still found."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    mail = b"From: a@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= 100%\r\n\r\nhi\r\n"
    await repo.deliver(Delivery("q1", "u", "", content=mail))
    await repo.deliver(Delivery("q2", "u", "", content=message(2)))
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE blob_headers")
        (blob,) = conn.execute("SELECT blob_id FROM messages WHERE uid = 2").fetchone()
        conn.execute("DELETE FROM blob_index WHERE blob_id = ?", (blob,))  # from before indexing
        conn.execute("PRAGMA user_version=2")
    conn.close()

    repo = SqliteStoreRepository(path)
    await repo.open()
    subject = store_pb2.HeaderMatch(name="subject", value="GRÜSSE 100%")
    assert (await repo.search("u", INBOX, store_pb2.SearchKey(header=subject))).uids == [1]
    test_2 = store_pb2.HeaderMatch(name="subject", value="test 2")
    assert (await repo.search("u", INBOX, store_pb2.SearchKey(header=test_2))).uids == [2]
    await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # Both contents have their header rows now: the second one healed by the search.
    names = conn.execute("SELECT DISTINCT blob_id FROM blob_headers").fetchall()
    assert len(names) == 2
    # The upgrade found a message without header rows: header searches keep looking for them.
    assert conn.execute("SELECT name FROM store_facts").fetchall() == [("unindexed_messages",)]
    conn.close()


async def test_header_searches_skip_the_unindexed_look_up_where_none_can_be(
    tmp_path: Path,
) -> None:
    """A new file, and a version-7 file whose every message is indexed, record no
    'unindexed_messages' fact, and their header SEARCH runs without the per-message look-up
    for header rows (ADR 0065); the answers are the same."""
    fresh, upgraded = tmp_path / "fresh.sqlite3", tmp_path / "upgraded.sqlite3"
    for path in (fresh, upgraded):
        repo = SqliteStoreRepository(path)
        await repo.open()
        for n in (1, 2, 3):
            await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
        await repo.close()
    conn = sqlite3.connect(upgraded)
    with conn:
        conn.execute("DROP TABLE store_facts")
        conn.execute("PRAGMA user_version=7")
    conn.close()
    for path in (fresh, upgraded):
        statements: list[str] = []
        repo = SqliteStoreRepository(path)
        await repo.open()
        await repo._db.run(lambda c, trace=statements.append: c.set_trace_callback(trace))
        test_2 = store_pb2.HeaderMatch(name="subject", value="TEST 2")
        assert (await repo.search("u", INBOX, store_pb2.SearchKey(header=test_2))).uids == [2]
        await repo._db.run(lambda c: c.set_trace_callback(None))
        await repo.close()
        assert any("instr(h.value" in s for s in statements)
        assert not any("x.name = ''" in s for s in statements)
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT * FROM store_facts").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()


async def test_version_8_file_gets_recent_claims(tmp_path: Path) -> None:
    """Version 8 had no \\Recent claims: what it holds is recent until a session claims it
    (RFC 3501 section 2.3.2: SHOULD be when no session is known to have been told)."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    for n in (1, 2):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("ALTER TABLE mailboxes DROP COLUMN first_recent_uid")
        conn.execute("PRAGMA user_version=8")
    conn.close()
    repo = SqliteStoreRepository(path)
    await repo.open()
    box = await repo.get_mailbox("u", INBOX)
    assert (box.first_recent_uid, box.recent) == (1, 2)
    claim = await repo.claim_recent("u", INBOX, 0)
    assert (claim.first, claim.last) == (1, 2)
    assert (await repo.get_mailbox("u", INBOX)).recent == 0
    await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def header_search_and_probe(
    repo: SqliteStoreRepository, subject: str
) -> tuple[list[int], bool]:
    """The UIDs a header SEARCH for ``subject`` finds, and whether it probed for contents
    without header rows (the probe's SQL names the marker row, ``x.name = ''``)."""
    statements: list[str] = []
    await repo._db.run(lambda c, trace=statements.append: c.set_trace_callback(trace))
    match = store_pb2.HeaderMatch(name="subject", value=subject)
    uids = (await repo.search("u", INBOX, store_pb2.SearchKey(header=match))).uids
    await repo._db.run(lambda c: c.set_trace_callback(None))
    return list(uids), any("x.name = ''" in s for s in statements)


async def facts(repo: SqliteStoreRepository) -> list[str]:
    return [
        r[0]
        for r in await repo._db.run(lambda c: c.execute("SELECT name FROM store_facts").fetchall())
    ]


async def test_janitor_indexes_old_contents_and_then_drops_the_fact(tmp_path: Path) -> None:
    """Contents stored before indexing existed are indexed by the janitor, a batch per call
    (``unindexed``); once none is left, the file's fact goes and header SEARCH stops probing
    for them, with the same answers (ADR 65, ADR 70)."""
    path = tmp_path / "store.sqlite3"
    v1_file(path, [message(n) for n in (1, 2, 3)])
    repo = SqliteStoreRepository(path)
    await repo.open()
    try:
        cutoffs = Cutoffs(now=0, tombstones=0, deliveries=0, orphans=0)
        assert lo.UNINDEXED in repo.kinds
        assert await facts(repo) == ["unindexed_messages"]  # the migration saw them
        assert await repo.collect(lo.UNINDEXED, cutoffs, 2) == 2
        assert await facts(repo) == ["unindexed_messages"]  # a full batch: maybe more left
        # The call that finds fewer than its limit has indexed the last: the fact goes.
        assert await repo.collect(lo.UNINDEXED, cutoffs, 2) == 1
        assert await facts(repo) == []
        assert await header_search_and_probe(repo, "TEST 2") == ([2], False)
        assert await header_search_and_probe(repo, "test 3") == ([3], False)
        assert await repo.collect(lo.UNINDEXED, cutoffs, 2) == 0
    finally:
        await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(DISTINCT blob_id) FROM blob_headers").fetchone() == (3,)
    conn.close()


async def test_header_search_probes_while_the_fact_stands(tmp_path: Path) -> None:
    """Before the janitor has been through, a header SEARCH of an upgraded file probes for
    contents without header rows, and finds the old message by its header."""
    path = tmp_path / "store.sqlite3"
    v1_file(path, [message(n) for n in (1, 2)])
    repo = SqliteStoreRepository(path)
    await repo.open()
    try:
        assert await header_search_and_probe(repo, "TEST 2") == ([2], True)
    finally:
        await repo.close()


async def test_janitor_keeps_the_fact_while_a_content_cannot_be_read(tmp_path: Path) -> None:
    """An old content whose chunk is lost stays unindexed: the call logs it and goes on, the
    next call goes on after it (a batch of lost contents never holds back the rest), and the
    fact stays, since one content still has no header rows."""
    path = tmp_path / "store.sqlite3"
    contents = [message(n) for n in (1, 2)]
    v1_file(path, contents)
    lost, kept = sorted(hashlib.sha256(c).hexdigest() for c in contents)  # lost one first
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (lost,))
    conn.close()
    repo = SqliteStoreRepository(path)
    await repo.open()
    try:
        cutoffs = Cutoffs(now=0, tombstones=0, deliveries=0, orphans=0)
        assert await repo.collect(lo.UNINDEXED, cutoffs, 1) == 0  # the lost one, logged
        assert await repo.collect(lo.UNINDEXED, cutoffs, 1) == 1  # the one after it
        assert await repo.collect(lo.UNINDEXED, cutoffs, 1) == 0  # the end: starts over
        assert await facts(repo) == ["unindexed_messages"]
        assert await repo.collect(lo.UNINDEXED, cutoffs, 10) == 0
        assert await facts(repo) == ["unindexed_messages"]
    finally:
        await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT DISTINCT blob_id FROM blob_headers").fetchall() == [(kept,)]
    conn.close()


async def test_upgrade_adds_the_metadata_index(tmp_path: Path) -> None:
    """A version-4 file (no narrow metadata index) gets it on open, and GetMessageMeta, which
    names it, reads the mail stored before."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP INDEX blob_index_meta")
        conn.execute("PRAGMA user_version=4")
    conn.close()

    repo = SqliteStoreRepository(path)
    await repo.open()
    ((uid, meta),) = await repo.get_meta("u", INBOX, [1])
    assert (uid, store_pb2.MessageMeta.FromString(meta).envelope.subject) == (1, "test 1")
    await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT meta FROM blob_index INDEXED BY blob_index_meta"
        " WHERE blob_id = 'x'"
    ).fetchall()
    assert "COVERING INDEX blob_index_meta" in str(plan)
    conn.close()


async def test_changes_are_found_through_the_modseq_indexes(tmp_path: Path) -> None:
    """GetChanges (every NOOP, IDLE poll and model-answered SEARCH) must not walk the whole
    mailbox in UID order to find the few messages changed since a MODSEQ."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    for n in range(3):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    since = (await repo.get_changes("u", INBOX, 0)).changed[1].modseq  # the second message's
    statements: list[str] = []
    await repo.connection.run(lambda c: c.set_trace_callback(statements.append))
    changes = await repo.get_changes("u", INBOX, since)
    await repo.connection.run(lambda c: c.set_trace_callback(None))
    assert [m.uid for m in changes.changed] == [3]
    await repo.close()
    conn = sqlite3.connect(path)
    plans = {
        table: str(conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall())
        for sql in statements
        for table in ("messages", "expunged")
        if f"FROM {table} WHERE mailbox_id" in sql and "modseq >" in sql
    }
    assert "INDEX messages_modseq" in plans["messages"]
    assert "INDEX expunged_modseq" in plans["expunged"]
    conn.close()


async def test_upgrade_leaves_the_wire_form_of_stored_mail_unknown(tmp_path: Path) -> None:
    """A version-6 file (no wire-form bit, ADR 0042) gets the columns on open; its messages
    read back as not known (POP3 scans them as before), new ones carry the bit."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    first = message(1)
    await repo.deliver(Delivery("q1", "u", "", content=first))
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("ALTER TABLE messages DROP COLUMN wire_ready")
        conn.execute("ALTER TABLE blob_index DROP COLUMN wire_ready")
        conn.execute("PRAGMA user_version=6")
    conn.close()

    repo = SqliteStoreRepository(path)
    await repo.open()
    await repo.deliver(Delivery("q2", "u", "", content=message(2)))
    old_blob = hashlib.sha256(first).hexdigest()
    # Delivered again by its blob: the index stored before the upgrade does not know either.
    await repo.deliver(Delivery("q3", "u", "", blob_id=old_blob))
    bits = {
        uid: found and found.wire_ready
        async for uid, found in repo.read_messages("u", INBOX, [1, 2, 3])
    }
    assert bits == {1: None, 2: True, 3: None}
    assert await content_of(repo, "u", INBOX, 1) == first
    await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_read_messages_trips_are_bounded_by_octets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0052: trips to the connection's thread grow from 2 messages (2, 4, 8 ... 64) and
    stop at _READ_GROUP_OCTETS (1 MiB) of first chunks: 16 single-chunk messages of 200 KB
    take trips of 2, 4, 6 (1.2 MB read, over the bound) and 4."""
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    contents = {i: message(i, bytes([65 + i]) * 200_000) for i in range(1, 17)}
    for i, content in contents.items():
        await repo.deliver(Delivery(f"q{i}", "u", "", content=content))
    trips: list[int] = []
    read = repo._read

    async def counted(fn: Any) -> Any:
        found = await read(fn)
        trips.append(len(found))
        return found

    monkeypatch.setattr(repo, "_read", counted)
    got = [
        (uid, b"".join([c async for c in found.chunks]) if found else None)
        async for uid, found in repo.read_messages("u", INBOX, list(contents))
    ]
    assert got == list(contents.items())
    assert trips == [2, 4, 6, 4]
    await repo.close()


async def test_read_messages_of_ascending_uids_in_one_statement_per_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0062: an ascending group (POP3's read-ahead) is one statement per trip, with the
    same answers as one per UID: missing UIDs (expunged, never there) in their places, the
    groups as before (2, 4, 8), and a non-ascending request still answered in its order."""
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    contents = {i: message(i) for i in range(1, 13)}
    for i, content in contents.items():
        await repo.deliver(Delivery(f"q{i}", "u", "", content=content))
    await repo.store_flags("u", INBOX, [2, 5, 12], FlagsMode.ADD, ("\\Deleted",))
    await repo.expunge("u", INBOX)
    gone = {2, 5, 12, 13, 40}
    statements: list[str] = []
    trips: list[int] = []
    read = repo._read

    async def counted(fn: Any) -> Any:
        def traced(conn: sqlite3.Connection) -> Any:
            conn.set_trace_callback(statements.append)
            try:
                return fn(conn)
            finally:
                conn.set_trace_callback(None)

        found = await read(traced)
        trips.append(len(found))
        return found

    monkeypatch.setattr(repo, "_read", counted)

    async def got(asked: list[int]) -> list[tuple[int, bytes | None]]:
        return [
            (uid, b"".join([c async for c in found.chunks]) if found else None)
            async for uid, found in repo.read_messages("u", INBOX, asked)
        ]

    asked = [*range(1, 14), 40]
    assert await got(asked) == [(u, None if u in gone else contents[u]) for u in asked]
    assert trips == [2, 4, 8]
    content_reads = [s for s in statements if "blob_chunks" in s]
    assert len(content_reads) == 3 and all(" IN (" in s for s in content_reads)
    trips.clear()
    unordered = [9, 3, 5, 1]
    assert await got(unordered) == [(u, None if u in gone else contents[u]) for u in unordered]
    assert trips == [2, 2]
    await repo.close()


async def test_read_messages_reads_the_next_group_while_this_one_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0057: the next trip starts before the caller has the current group's messages; a
    caller that stops early leaves no read waiting for it."""
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    contents = {i: message(i) for i in range(1, 9)}
    for i, content in contents.items():
        await repo.deliver(Delivery(f"q{i}", "u", "", content=content))
    taken: list[int] = []
    started: list[int] = []
    read = repo._read

    async def counted(fn: Any) -> Any:
        started.append(len(taken))
        return await read(fn)

    monkeypatch.setattr(repo, "_read", counted)
    async for uid, found in repo.read_messages("u", INBOX, list(contents)):
        assert found is not None
        taken.append(uid)
    assert taken == list(contents)
    # Trips of 2, 4, 2: the second started before message 1 was taken, the third before 3.
    assert started == [0, 0, 2]
    started.clear()
    taken.clear()
    async with contextlib.aclosing(repo.read_messages("u", INBOX, list(contents))) as stream:
        async for uid, _ in stream:
            taken.append(uid)
            break
    before = asyncio.all_tasks()
    await asyncio.sleep(0.05)
    assert all(t.done() for t in before - {asyncio.current_task()})
    assert taken == [1] and started == [0, 0]
    await repo.close()
