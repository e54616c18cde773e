"""The store on SQLite (stdlib sqlite3 in worker threads).

One connection, one writer at a time (an asyncio lock), each operation one transaction begun
with BEGIN IMMEDIATE, so a crash at any point leaves either all or none of its writes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from postmesh.store.blobs import BlobSource, chunk_count
from postmesh.store.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from postmesh.store.model import (
    INBOX,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagsMode,
    FlagsResult,
    Mailbox,
    Message,
)
from postmesh.store.repository import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_UPLOAD_PIN_SECONDS,
    StoreRepository,
    new_uidvalidity,
)
from postmesh.store.sqlite.schema import SCHEMA, SCHEMA_VERSION
from postmesh.store.validation import DELETED, SEEN, apply_flags

T = TypeVar("T")

_MAILBOX_COLS = "id, user, name, uidvalidity, uidnext, highestmodseq, special_use, subscribed"
_MESSAGE_COLS = "uid, flags, size, internal_date, modseq, blob_id"


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a Deliver acknowledged to the delivery service (which then commits its Kafka
    # offset) must survive a power cut.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{path} has schema version {version}, newer than this store")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


def _message(row: tuple[Any, ...]) -> Message:
    uid, flags, size, internal_date, modseq, blob_id = row
    return Message(int(uid), tuple(json.loads(flags)), size, internal_date, modseq, blob_id)


class SqliteStoreRepository(StoreRepository):
    transient_errors = (sqlite3.OperationalError,)

    def __init__(
        self,
        path: Path,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        upload_pin_seconds: int = DEFAULT_UPLOAD_PIN_SECONDS,
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes, upload_pin_seconds=upload_pin_seconds)
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._conn = await asyncio.to_thread(_connect, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            async with self._lock:
                await asyncio.to_thread(self._conn.close)
            self._conn = None

    async def ping(self) -> bool:
        try:
            await self._read(lambda c: c.execute("SELECT 1").fetchone())
        except (sqlite3.Error, RuntimeError):
            return False
        return True

    # -- plumbing ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStoreRepository used before open()")
        return self._conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        async with self._lock:
            return await asyncio.to_thread(fn, conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()

        def txn() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._lock:
            return await asyncio.to_thread(txn)

    @staticmethod
    def _mailbox_row(conn: sqlite3.Connection, user: str, name: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE user = ? AND name = ?", (user, name)
        ).fetchone()
        return row

    @classmethod
    def _require_mailbox(cls, conn: sqlite3.Connection, user: str, name: str) -> tuple[Any, ...]:
        row = cls._mailbox_row(conn, user, name)
        if row is None:
            raise NotFound(f"mailbox {name!r} of {user} does not exist")
        return row

    @staticmethod
    def _insert_mailbox(conn: sqlite3.Connection, user: str, name: str) -> None:
        conn.execute(
            "INSERT INTO mailboxes (user, name, uidvalidity, uidnext, highestmodseq,"
            " subscribed, created_at) VALUES (?, ?, ?, 1, 1, ?, ?)",
            (user, name, new_uidvalidity(), int(name == INBOX), int(time.time())),
        )

    @staticmethod
    def _to_mailbox(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Mailbox:
        mid, user, name, uidvalidity, uidnext, modseq, special_use, subscribed = row
        total, seen = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(seen), 0) FROM messages WHERE mailbox_id = ?", (mid,)
        ).fetchone()
        return Mailbox(
            str(mid), user, name, uidvalidity, uidnext, modseq, total, total - seen,
            special_use, bool(subscribed),
        )  # fmt: skip

    @staticmethod
    def _bump_modseq(conn: sqlite3.Connection, mailbox_id: int) -> int:
        row = conn.execute(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
            " RETURNING highestmodseq",
            (mailbox_id,),
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _store_blob(conn: sqlite3.Connection, source: BlobSource, refs: int, pin: int) -> None:
        """Insert the blob with its chunks if new, else add ``refs`` and extend the pin."""
        cur = conn.execute(
            "UPDATE blobs SET refcount = refcount + ?, pinned_until = MAX(pinned_until, ?)"
            " WHERE id = ?",
            (refs, pin, source.blob_id),
        )
        if cur.rowcount:
            return
        conn.execute(
            "INSERT INTO blobs (id, size, refcount, pinned_until, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (source.blob_id, source.size, refs, pin, int(time.time())),
        )
        conn.executemany(
            "INSERT INTO blob_chunks (blob_id, n, data) VALUES (?, ?, ?)",
            ((source.blob_id, n, source.read_chunk(n)) for n in range(source.chunks)),
        )

    @staticmethod
    def _release_blob(conn: sqlite3.Connection, blob_id: str, refs: int) -> None:
        row = conn.execute(
            "UPDATE blobs SET refcount = refcount - ? WHERE id = ? RETURNING refcount,"
            " pinned_until",
            (refs, blob_id),
        ).fetchone()
        if row is not None and row[0] <= 0 and row[1] <= time.time():
            conn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (blob_id,))
            conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))

    # -- operations --------------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, source: BlobSource | None) -> DeliverResult:
        assert delivery.blob_id is not None
        blob_id = delivery.blob_id

        def txn(conn: sqlite3.Connection) -> DeliverResult:
            key = (delivery.queue_id, delivery.user, delivery.mailbox)
            done = conn.execute(
                "SELECT uid, uidvalidity, modseq FROM deliveries"
                " WHERE queue_id = ? AND user = ? AND mailbox = ?",
                key,
            ).fetchone()
            if done is not None:
                return DeliverResult(
                    done[0], done[1], delivery.mailbox, done[2], duplicate=True, created=False
                )
            created = False
            row = self._mailbox_row(conn, delivery.user, delivery.mailbox)
            if row is None and delivery.mailbox == INBOX:
                # INBOX exists for every user from the first delivery on (RFC 9051 5.1).
                self._insert_mailbox(conn, delivery.user, INBOX)
                row = self._mailbox_row(conn, delivery.user, INBOX)
                created = True
            if row is None:
                raise NotFound(f"mailbox {delivery.mailbox!r} of {delivery.user} does not exist")
            mailbox_id, uidvalidity = row[0], row[3]
            if source is not None:
                self._store_blob(conn, source, 1, 0)
                size = source.size
            else:
                got = conn.execute(
                    "UPDATE blobs SET refcount = refcount + 1 WHERE id = ? RETURNING size",
                    (blob_id,),
                ).fetchone()
                if got is None:
                    raise InvalidArgument(f"unknown blob_id {blob_id}")
                size = got[0]
            uid, modseq = conn.execute(
                "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
                " WHERE id = ? RETURNING uidnext - 1, highestmodseq",
                (mailbox_id,),
            ).fetchone()
            conn.execute(
                "INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted,"
                " internal_date, size, blob_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mailbox_id, uid, modseq, json.dumps(delivery.flags),
                    int(SEEN in delivery.flags), int(DELETED in delivery.flags),
                    delivery.internal_date, size, blob_id,
                ),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO deliveries (queue_id, user, mailbox, uid, uidvalidity, modseq,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, uid, uidvalidity, modseq, int(time.time())),
            )
            return DeliverResult(
                uid, uidvalidity, delivery.mailbox, modseq, duplicate=False, created=True,
                mailbox_created=created,
            )  # fmt: skip

        return await self._write(txn)

    async def _put_blob(self, source: BlobSource) -> None:
        pin = int(time.time()) + self.upload_pin_seconds
        await self._write(lambda conn: self._store_blob(conn, source, 0, pin))

    async def _create_mailbox(self, user: str, name: str) -> Mailbox:
        def txn(conn: sqlite3.Connection) -> Mailbox:
            if self._mailbox_row(conn, user, name) is not None:
                raise AlreadyExists(f"mailbox {name!r} of {user} exists")
            self._insert_mailbox(conn, user, name)
            return self._to_mailbox(conn, self._require_mailbox(conn, user, name))

        return await self._write(txn)

    async def _list_mailboxes(self, user: str) -> list[Mailbox]:
        def q(conn: sqlite3.Connection) -> list[Mailbox]:
            rows = conn.execute(
                f"SELECT {_MAILBOX_COLS} FROM mailboxes WHERE user = ? ORDER BY name", (user,)
            ).fetchall()
            return [self._to_mailbox(conn, r) for r in rows]

        return await self._read(q)

    async def _get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._read(
            lambda conn: self._to_mailbox(conn, self._require_mailbox(conn, user, name))
        )

    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        def q(conn: sqlite3.Connection) -> tuple[list[Message], bool]:
            mailbox_id = self._require_mailbox(conn, user, mailbox)[0]
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND uid > ?"
                " ORDER BY uid LIMIT ?",
                (mailbox_id, after_uid, limit + 1),
            ).fetchall()
            return [_message(r) for r in rows[:limit]], len(rows) > limit

        return await self._read(q)

    async def _read_message(self, user: str, mailbox: str, uid: int) -> AsyncIterator[bytes]:
        def find(conn: sqlite3.Connection) -> tuple[str, int]:
            mailbox_id = self._require_mailbox(conn, user, mailbox)[0]
            row = conn.execute(
                "SELECT blob_id, size FROM messages WHERE mailbox_id = ? AND uid = ?",
                (mailbox_id, uid),
            ).fetchone()
            if row is None:
                raise NotFound(f"no message with uid {uid} in {mailbox!r}")
            return row[0], row[1]

        blob_id, size = await self._read(find)
        return self._chunks(blob_id, size, uid)

    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        row = await self._read(
            lambda c: c.execute("SELECT size FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"blob {blob_id} is not stored")
        return self._chunks(blob_id, int(row[0]), 0)

    async def _chunks(self, blob_id: str, size: int, uid: int) -> AsyncIterator[bytes]:
        # Chunk by chunk, each its own short read, so a large message never sits in memory
        # and never holds the connection while the client is slow.
        for n in range(chunk_count(size)):
            row = await self._read(
                lambda c, n=n: c.execute(  # type: ignore[misc]
                    "SELECT data FROM blob_chunks WHERE blob_id = ? AND n = ?", (blob_id, n)
                ).fetchone()
            )
            if row is None:
                if n == 0:
                    raise DataLoss(f"content of blob {blob_id} (uid {uid}) is missing")
                raise NotFound(f"blob {blob_id} was deleted while being read")
            yield bytes(row[0])

    async def _store_flags(
        self, user: str, mailbox: str, uids: list[int], mode: FlagsMode, flags: tuple[str, ...]
    ) -> FlagsResult:
        def txn(conn: sqlite3.Connection) -> FlagsResult:
            mailbox_id = self._require_mailbox(conn, user, mailbox)[0]
            found = self._select_uids(conn, mailbox_id, uids)
            result = FlagsResult()
            modseq = 0
            for msg in found:
                new = apply_flags(msg.flags, mode, flags)
                if set(new) == set(msg.flags):
                    result.messages.append(msg)
                    continue
                # RFC 7162 section 3.1: one new MODSEQ for the messages one STORE changed.
                modseq = modseq or self._bump_modseq(conn, mailbox_id)
                conn.execute(
                    "UPDATE messages SET flags = ?, seen = ?, deleted = ?, modseq = ?"
                    " WHERE mailbox_id = ? AND uid = ?",
                    (json.dumps(new), int(SEEN in new), int(DELETED in new), modseq,
                     mailbox_id, msg.uid),
                )  # fmt: skip
                result.messages.append(
                    Message(msg.uid, new, msg.size, msg.internal_date, modseq, msg.blob_id)
                )
                result.changed.append(msg.uid)
            return result

        return await self._write(txn)

    @staticmethod
    def _select_uids(conn: sqlite3.Connection, mailbox_id: int, uids: list[int]) -> list[Message]:
        out: list[Message] = []
        for i in range(0, len(uids), 500):  # stay below SQLite's bound-parameter limit
            part = uids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND uid IN ({marks})"
                " ORDER BY uid",
                (mailbox_id, *part),
            ).fetchall()
            out.extend(_message(r) for r in rows)
        return out

    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult:
        def txn(conn: sqlite3.Connection) -> ExpungeResult:
            mailbox_id = self._require_mailbox(conn, user, mailbox)[0]
            if uids is None:
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND deleted = 1"
                    " ORDER BY uid",
                    (mailbox_id,),
                ).fetchall()
                doomed = [_message(r) for r in rows]
            else:
                doomed = [
                    m for m in self._select_uids(conn, mailbox_id, uids) if DELETED in m.flags
                ]
            if not doomed:
                return ExpungeResult()
            modseq = self._bump_modseq(conn, mailbox_id)
            released: dict[str, int] = {}
            for m in doomed:
                conn.execute(
                    "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, m.uid)
                )
                released[m.blob_id] = released.get(m.blob_id, 0) + 1
            for blob_id, refs in released.items():
                self._release_blob(conn, blob_id, refs)
            return ExpungeResult([m.uid for m in doomed], modseq)

        return await self._write(txn)

    async def _blob_refcount(self, blob_id: str) -> int | None:
        row = await self._read(
            lambda c: c.execute("SELECT refcount FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        )
        return None if row is None else int(row[0])
