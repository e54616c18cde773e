"""The janitor's work on SQLite (``postmesh.store.leftovers``), each call one transaction.

SQLite writes every operation in one transaction, so it has none of the MongoDB backend's
half-written leftovers: only expired upload pins, unreferenced blobs, aged tombstones and
delivery records, free pages to hand back to the file system, and contents an old version
stored without indexing them.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict

from postmesh.store.sqlite import rows
from postmesh.store.sqlite.search_sql import UNINDEXED, UNINDEXED_FACT


def upload_pins(conn: sqlite3.Connection, now: float, limit: int) -> int:
    """Expired pins cleared; the blob then goes with the next ``blobs`` call if no message
    references it."""
    return conn.execute(
        "UPDATE blobs SET pinned_until = 0 WHERE id IN (SELECT id FROM blobs"
        " WHERE pinned_until > 0 AND pinned_until <= ? LIMIT ?)",
        (int(now), limit),
    ).rowcount


def blobs(conn: sqlite3.Connection, now: float, limit: int) -> int:
    found = conn.execute(
        "SELECT id FROM blobs WHERE refcount <= 0 AND pinned_until <= ? LIMIT ?",
        (int(now), limit),
    ).fetchall()
    for (blob_id,) in found:
        rows.delete_blob(conn, blob_id)
    return len(found)


def tombstones(conn: sqlite3.Connection, before: float, limit: int) -> int:
    """The oldest tombstones, after raising each mailbox's vanished floor to the highest
    MODSEQ removed (in the same transaction: GetChanges sees both or neither)."""
    found = conn.execute(
        "SELECT mailbox_id, uid, modseq FROM expunged WHERE expunged_at < ?"
        " ORDER BY expunged_at LIMIT ?",
        (int(before), limit),
    ).fetchall()
    floor: dict[int, int] = defaultdict(int)
    for mailbox_id, _, modseq in found:
        floor[mailbox_id] = max(floor[mailbox_id], int(modseq))
    conn.executemany(
        "UPDATE mailboxes SET vanished_floor = MAX(vanished_floor, ?) WHERE id = ?",
        [(m, mailbox_id) for mailbox_id, m in floor.items()],
    )
    conn.executemany(
        "DELETE FROM expunged WHERE mailbox_id = ? AND uid = ?", [(r[0], r[1]) for r in found]
    )
    return len(found)


def deliveries(conn: sqlite3.Connection, before: float, limit: int) -> int:
    return conn.execute(
        "DELETE FROM deliveries WHERE (queue_id, user, mailbox) IN (SELECT queue_id, user,"
        " mailbox FROM deliveries WHERE created_at < ? LIMIT ?)",
        (int(before), limit),
    ).rowcount


def free_pages(conn: sqlite3.Connection, limit: int) -> int:
    """Up to ``limit`` free pages handed back (incremental auto-vacuum; a file made before it
    existed has none, and keeps its free pages for reuse). Run outside a transaction."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2:
        return 0
    before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if not before:
        return 0
    # executescript steps the pragma to the end (execute() frees one page per step).
    conn.executescript(f"PRAGMA incremental_vacuum({int(limit)})")
    return before - int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def unindexed_blobs(conn: sqlite3.Connection, after: str, limit: int) -> list[str] | None:
    """Up to ``limit`` contents of stored messages that have no header rows (stored before
    indexing existed), in blob id order after ``after``; None, without a look, when the file
    records that none can be (ADR 65)."""
    if not rows.may_have_unindexed(conn):
        return None
    found = conn.execute(
        f"SELECT DISTINCT m.blob_id FROM messages m WHERE m.blob_id > ? AND {UNINDEXED}"
        " ORDER BY m.blob_id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [str(r[0]) for r in found]


def drop_unindexed_fact(conn: sqlite3.Connection) -> bool:
    """The file's 'unindexed_messages' fact removed if no stored message lacks header rows,
    checked in the same transaction (every write since schema 8 indexes what it stores, so
    none can appear later). True if it was removed."""
    if conn.execute(f"SELECT 1 FROM messages m WHERE {UNINDEXED} LIMIT 1").fetchone():
        return False
    return conn.execute("DELETE FROM store_facts WHERE name = ?", (UNINDEXED_FACT,)).rowcount > 0


CENSUS = {
    "blobs": "SELECT COUNT(*) FROM blobs",
    "chunks": "SELECT COUNT(*) FROM blob_chunks",
    "indexes": "SELECT COUNT(*) FROM blob_index",
    "header_rows": "SELECT COUNT(*) FROM blob_headers",
    "messages": "SELECT COUNT(*) FROM messages",
    "tombstones": "SELECT COUNT(*) FROM expunged",
    "deliveries": "SELECT COUNT(*) FROM deliveries",
}


def census(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: int(conn.execute(sql).fetchone()[0]) for name, sql in CENSUS.items()}
