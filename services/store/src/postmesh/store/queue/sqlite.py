"""Queue and locks on SQLite: tables in the store's database file, on a connection of their own.

Every operation is one BEGIN IMMEDIATE transaction, so claims are atomic across connections
(and processes) on the same file: the write lock serialises them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from postmesh.common.sqlite import SqliteConnection
from postmesh.store.blobs import BlobSource
from postmesh.store.errors import InvalidArgument, NotFound
from postmesh.store.queue.model import LeaseNotHeld, LockState, NewEntry, QueueEntry, QueueStats
from postmesh.store.queue.repository import Clock, QueueRepository

T = TypeVar("T")

# Tables of their own (no shared PRAGMA user_version: that one is the mailbox schema's).
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_entries (
    queue_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    envelope BLOB NOT NULL,
    blob_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until INTEGER NOT NULL DEFAULT 0,
    -- max(next_attempt_at, lease_until): from then on the entry can be claimed.
    ready_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- When a delay notice (RFC 3464 Action: delayed) went to the sender; 0: none yet.
    delay_notified_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_entries_ready ON queue_entries (ready_at);
CREATE TABLE IF NOT EXISTS maildrop_locks (
    user TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
"""
_COLS = (
    "queue_id, recipient, envelope, blob_id, attempts, next_attempt_at, last_error,"
    " lease_owner, lease_until, created_at, delay_notified_at"
)


def _entry(row: tuple[Any, ...]) -> QueueEntry:
    q, r, envelope, blob_id, attempts, next_at, error, who, until, created, notified = row
    return QueueEntry(
        q, r, bytes(envelope), blob_id, attempts, next_at, error, who, until, created, notified
    )


def _setup(conn: sqlite3.Connection) -> None:
    # synchronous=FULL (postmesh.common.sqlite): an acknowledged Enqueue survives a power cut.
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(queue_entries)")}
    if "delay_notified_at" not in columns:  # a queue made before delay notices
        conn.execute(
            "ALTER TABLE queue_entries ADD COLUMN delay_notified_at INTEGER NOT NULL DEFAULT 0"
        )


class SqliteQueueRepository(QueueRepository):
    transient_errors = (sqlite3.OperationalError,)

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        db: SqliteConnection | None = None,
        blobs: bool = False,
    ) -> None:
        """``db``: the store's own connection to ``path``, opened and closed by the store. On
        it, Enqueue's blob and its entry share one thread and group commits, never waiting for
        each other's write lock as two connections of one process would. ``blobs``: the
        store's blob tables are in that file (``enqueue_with_content`` writes them)."""
        super().__init__(clock=clock)
        self.path = path
        self._shared = db is not None
        self.writes_content = blobs and db is not None
        self._db = db if db is not None else SqliteConnection(path, _setup)

    async def open(self) -> None:
        if self._shared:
            await self._db.run(_setup)
        else:
            await self._db.open()

    async def close(self) -> None:
        if not self._shared:
            await self._db.close()

    async def ping(self) -> bool:
        return await self._db.ping()

    async def _txn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.transaction(fn)

    @staticmethod
    def _row(conn: sqlite3.Connection, queue_id: str, rcpt: str) -> QueueEntry | None:
        row = conn.execute(
            f"SELECT {_COLS} FROM queue_entries WHERE queue_id = ? AND recipient = ?",
            (queue_id, rcpt),
        ).fetchone()
        return None if row is None else _entry(row)

    @classmethod
    def _held(cls, conn: sqlite3.Connection, queue_id: str, rcpt: str, who: str) -> QueueEntry:
        entry = cls._row(conn, queue_id, rcpt)
        if entry is None:
            raise NotFound(f"no queue entry for {queue_id} {rcpt}")
        if entry.lease_owner != who:
            raise LeaseNotHeld(f"{who} does not hold the lease of {queue_id} {rcpt}")
        return entry

    # -- deferred queue ----------------------------------------------------------------------

    async def _enqueue(self, entry: NewEntry, now: int) -> tuple[QueueEntry, bool]:
        def txn(conn: sqlite3.Connection) -> tuple[QueueEntry, bool]:
            found = self._row(conn, entry.queue_id, entry.recipient)
            if found is not None:
                return found, True
            return self._insert(conn, entry, now), False

        return await self._txn(txn)

    async def _enqueue_with_content(
        self, entry: NewEntry, now: int, source: BlobSource | None, pin_until: int
    ) -> tuple[QueueEntry, bool]:
        from postmesh.store.sqlite import rows  # the store's blob tables (same file)

        def txn(conn: sqlite3.Connection) -> tuple[QueueEntry, bool]:
            found = self._row(conn, entry.queue_id, entry.recipient)
            if found is not None:
                return found, True  # a repeat: no blob written, no pin extended
            if source is not None:
                rows.store_blob(conn, source, 0, pin_until)
            elif not conn.execute(
                "UPDATE blobs SET pinned_until = MAX(pinned_until, ?) WHERE id = ?",
                (pin_until, entry.blob_id),
            ).rowcount:
                raise InvalidArgument(f"unknown blob_id {entry.blob_id}")
            return self._insert(conn, entry, now), False

        return await self._txn(txn)

    @classmethod
    def _insert(cls, conn: sqlite3.Connection, entry: NewEntry, now: int) -> QueueEntry:
        # Born leased: claimable again only once the lease ran out, as after a claim.
        until = now + entry.lease_seconds * 1000 if entry.lease_owner else 0
        conn.execute(
            f"INSERT INTO queue_entries ({_COLS}, ready_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                entry.queue_id, entry.recipient, entry.envelope, entry.blob_id,
                entry.attempts, entry.next_attempt_at_ms, entry.last_error,
                entry.lease_owner, until, now, max(entry.next_attempt_at_ms, until),
            ),
        )  # fmt: skip
        stored = cls._row(conn, entry.queue_id, entry.recipient)
        assert stored is not None
        return stored

    async def _get(self, queue_id: str, rcpt: str) -> QueueEntry | None:
        # A plain read (a WAL snapshot): no write lock for Enqueue's duplicate check.
        return await self._db.run(lambda conn: self._row(conn, queue_id, rcpt))

    async def _claim_due(self, who: str, limit: int, lease_ms: int, now: int) -> list[QueueEntry]:
        until = now + lease_ms
        # Most polls find nothing due: a plain read answers them without the write lock.
        due = await self._db.run(
            lambda conn: conn.execute(
                "SELECT 1 FROM queue_entries WHERE ready_at <= ? LIMIT 1", (now,)
            ).fetchone()
        )
        if due is None:
            return []

        def txn(conn: sqlite3.Connection) -> list[QueueEntry]:
            keys = conn.execute(
                "SELECT queue_id, recipient FROM queue_entries WHERE ready_at <= ?"
                " ORDER BY ready_at, queue_id, recipient LIMIT ?",
                (now, limit),
            ).fetchall()
            out: list[QueueEntry] = []
            for q, r in keys:
                conn.execute(
                    "UPDATE queue_entries SET lease_owner = ?, lease_until = ?, ready_at = ?"
                    " WHERE queue_id = ? AND recipient = ?",
                    (who, until, until, q, r),
                )
                entry = self._row(conn, q, r)
                assert entry is not None
                out.append(entry)
            return out

        return await self._txn(txn)

    async def _claim(
        self, queue_id: str, rcpt: str, who: str, lease_ms: int, now: int
    ) -> QueueEntry:
        until = now + lease_ms

        def txn(conn: sqlite3.Connection) -> QueueEntry:
            current = self._row(conn, queue_id, rcpt)
            if current is None:
                raise NotFound(f"no queue entry {queue_id} {rcpt}")
            if current.lease_owner not in ("", who) and current.lease_expires_at_ms > now:
                raise LeaseNotHeld(f"{current.lease_owner} holds the lease of {queue_id} {rcpt}")
            conn.execute(
                "UPDATE queue_entries SET lease_owner = ?, lease_until = ?, ready_at = ?"
                " WHERE queue_id = ? AND recipient = ?",
                (who, until, until, queue_id, rcpt),
            )
            entry = self._row(conn, queue_id, rcpt)
            assert entry is not None
            return entry

        return await self._txn(txn)

    async def _reschedule(
        self,
        queue_id: str,
        rcpt: str,
        who: str,
        next_at: int,
        last_error: str,
        notified_at: int,
        now: int,
    ) -> QueueEntry:
        def txn(conn: sqlite3.Connection) -> QueueEntry:
            self._held(conn, queue_id, rcpt, who)
            conn.execute(
                "UPDATE queue_entries SET attempts = attempts + 1, next_attempt_at = ?,"
                " last_error = ?, lease_owner = '', lease_until = 0, ready_at = ?,"
                " delay_notified_at = CASE WHEN delay_notified_at = 0 THEN ?"
                " ELSE delay_notified_at END"
                " WHERE queue_id = ? AND recipient = ?",
                (next_at, last_error, next_at, notified_at, queue_id, rcpt),
            )
            entry = self._row(conn, queue_id, rcpt)
            assert entry is not None
            return entry

        return await self._txn(txn)

    async def _delete(self, queue_id: str, rcpt: str, who: str, now: int) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            self._held(conn, queue_id, rcpt, who)
            conn.execute(
                "DELETE FROM queue_entries WHERE queue_id = ? AND recipient = ?", (queue_id, rcpt)
            )

        await self._txn(txn)

    async def _delete_many(
        self, items: list[tuple[str, str, str]], now: int
    ) -> list[NotFound | LeaseNotHeld | None]:
        def txn(conn: sqlite3.Connection) -> list[NotFound | LeaseNotHeld | None]:
            out: list[NotFound | LeaseNotHeld | None] = []
            for queue_id, rcpt, who in items:
                try:
                    self._held(conn, queue_id, rcpt, who)
                except (NotFound, LeaseNotHeld) as e:
                    out.append(e)
                    continue
                conn.execute(
                    "DELETE FROM queue_entries WHERE queue_id = ? AND recipient = ?",
                    (queue_id, rcpt),
                )
                out.append(None)
            return out

        return await self._txn(txn)

    async def _list(
        self, queue_id: str, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[QueueEntry], bool]:
        where, args = ["1"], []
        if queue_id:
            where.append("queue_id = ?")
            args.append(queue_id)
        if after is not None:
            where.append("(queue_id, recipient) > (?, ?)")
            args.extend(after)

        def q(conn: sqlite3.Connection) -> tuple[list[QueueEntry], bool]:
            rows = conn.execute(
                f"SELECT {_COLS} FROM queue_entries WHERE {' AND '.join(where)}"
                " ORDER BY queue_id, recipient LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
            return [_entry(r) for r in rows[:limit]], len(rows) > limit

        return await self._txn(q)

    async def _stats(self, now: int) -> QueueStats:
        def q(conn: sqlite3.Connection) -> QueueStats:
            total, due, leased, oldest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(ready_at <= ?), 0),"
                " COALESCE(SUM(lease_until > ?), 0), COALESCE(MIN(created_at), 0)"
                " FROM queue_entries",
                (now, now),
            ).fetchone()
            return QueueStats(total, due, leased, oldest)

        return await self._txn(q)

    # -- maildrop locks ----------------------------------------------------------------------

    async def _acquire_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState:
        def txn(conn: sqlite3.Connection) -> LockState:
            row = conn.execute(
                "SELECT owner, until FROM maildrop_locks WHERE user = ?", (user,)
            ).fetchone()
            if row is not None and row[0] != who and row[1] > now:
                return LockState(False, row[0], row[1])
            conn.execute(
                "INSERT INTO maildrop_locks (user, owner, until) VALUES (?, ?, ?)"
                " ON CONFLICT (user) DO UPDATE SET owner = excluded.owner, until = excluded.until",
                (user, who, now + lease_ms),
            )
            return LockState(True, who, now + lease_ms)

        return await self._txn(txn)

    async def _renew_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState:
        def txn(conn: sqlite3.Connection) -> LockState:
            # Held until another owner takes it, even past its expiry (as the MongoDB backend).
            cur = conn.execute(
                "UPDATE maildrop_locks SET until = ? WHERE user = ? AND owner = ?",
                (now + lease_ms, user, who),
            )
            if cur.rowcount:
                return LockState(True, who, now + lease_ms)
            row = conn.execute(
                "SELECT owner, until FROM maildrop_locks WHERE user = ?", (user,)
            ).fetchone()
            if row is None or row[1] <= now:
                return LockState(False, "", 0)
            return LockState(False, row[0], row[1])

        return await self._txn(txn)

    async def _release_lock(self, user: str, who: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM maildrop_locks WHERE user = ? AND owner = ?", (user, who)
            )
            return bool(cur.rowcount)

        # Non-durable (ADR 0052): a release lost in a power cut only leaves the lease to run
        # out (pop3_maildrop_lock_seconds), and POP3's QUIT waits for it before its reply.
        return await self._db.transaction(txn, durable=False)
