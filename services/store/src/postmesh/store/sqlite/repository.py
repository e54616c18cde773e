"""The store on SQLite (stdlib sqlite3 in worker threads).

One connection, one writer at a time (its own worker thread), each operation one transaction begun
with BEGIN IMMEDIATE, so a crash at any point leaves either all or none of its writes: no
operation can lose or duplicate a message. The operations themselves are in ``mailboxes.py``
and ``messages.py``; this class runs them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from postmesh.api.store.v1 import store_pb2
from postmesh.common.logging import get_logger, kv
from postmesh.common.sqlite import MAX_NON_DURABLE, SqliteConnection
from postmesh.store import flag_listing
from postmesh.store import leftovers as lo
from postmesh.store.blobs import BlobSource, chunk_count
from postmesh.store.errors import DataLoss, NotFound
from postmesh.store.leftovers import Cutoffs, Leftovers
from postmesh.store.model import (
    AppendResult,
    Changes,
    CopyResult,
    CreateResult,
    DeleteResult,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagListing,
    FlagsMode,
    FlagsResult,
    Mailbox,
    Message,
    MessageIndex,
    ProvisionResult,
    Quota,
    RecentClaim,
    RenameResult,
    SearchRows,
    StoredContent,
)
from postmesh.store.repository import StoreRepository
from postmesh.store.sqlite import leftovers as janitor
from postmesh.store.sqlite import mailboxes as mb
from postmesh.store.sqlite import messages as msg
from postmesh.store.sqlite import rows
from postmesh.store.sqlite.schema import migrate

log = get_logger(__name__)

# A message's blob, size, first chunk (most messages are one chunk) and wire-form bit.
_FIRST_CHUNK = (
    "SELECT m.blob_id, m.size, c.data, m.wire_ready FROM messages m"
    " LEFT JOIN blob_chunks c ON c.blob_id = m.blob_id AND c.n = 0"
    " WHERE m.mailbox_id = ? AND m.uid = ?"
)
# read_messages of an ascending group of UIDs (POP3's read-ahead asks in maildrop order): one
# statement for the group instead of one per UID (ADR 0062); "?" placeholders per UID, at most
# _READ_GROUP of them.
_FIRST_CHUNKS_ASCENDING = (
    "SELECT m.uid, m.blob_id, m.size, c.data, m.wire_ready FROM messages m"
    " LEFT JOIN blob_chunks c ON c.blob_id = m.blob_id AND c.n = 0"
    " WHERE m.mailbox_id = ? AND m.uid IN ({}) ORDER BY m.uid"
)
# read_messages: at most this many messages, or first chunks of this many octets (the
# largest GetMessageContents response), looked up per trip to the connection's thread.
_READ_GROUP = 64
_READ_GROUP_OCTETS = 1024 * 1024

T = TypeVar("T")

# A row of _FIRST_CHUNK: blob id, size, first chunk (None if missing), wire-form bit.
_Found = tuple[str, int, bytes | None, bool | None]


def _bit(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _found(row: tuple[str, int, bytes | None, int | None]) -> _Found:
    return row[0], row[1], None if row[2] is None else bytes(row[2]), _bit(row[3])


# Reads go through a memory map of the file instead of read() into SQLite's own 2 MB page
# cache: the rows FETCH reads (blob_index's metadata beside large search documents, content
# chunks) are spread over far more pages than that cache holds, and copying each page in again
# was most of GetMessageMeta's time (about 3x faster measured; ADR 0025). Address space only:
# the pages are the kernel's page cache, shared, not extra memory. Writes still go through the
# WAL as before.
MMAP_BYTES = 1 << 30

# How far every mailbox's MODSEQ counter moves at each open: beyond what the flag changes a
# power cut may have lost could have taken (ADR 0041).
MODSEQ_ADVANCE_AT_OPEN = MAX_NON_DURABLE + 1


def _setup(conn: sqlite3.Connection) -> None:
    # The connection is synchronous=FULL (postmesh.common.sqlite): a Deliver acknowledged to
    # the delivery service (which then commits its Kafka offset) survives a power cut. Flag
    # changes alone do not fsync (ADR 0041): at most MAX_NON_DURABLE of them may be lost.
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    migrate(conn)
    # Before any new MODSEQ is handed out, and durably (an fsync'ed autocommit): a MODSEQ a
    # client was told for a flag change lost in a power cut is never handed out again, so
    # mod-sequences stay strictly increasing (RFC 7162 section 3.1) and CHANGEDSINCE misses
    # nothing.
    rows.advance_modseqs(conn, MODSEQ_ADVANCE_AT_OPEN)


class SqliteStoreRepository(StoreRepository, Leftovers):
    transient_errors = (sqlite3.OperationalError,)

    def __init__(self, path: Path, **limits: int) -> None:
        super().__init__(**limits)
        self.path = path
        self._db = SqliteConnection(path, _setup)
        # SELECT's listings by mailbox state; used on the connection's one thread only.
        self._listings = flag_listing.ListingCache()
        # Where the janitor's scan for unindexed contents goes on from (ADR 70).
        self._unindexed_after = ""

    @property
    def connection(self) -> SqliteConnection:
        """For the queue's tables in the same file (postmesh.store.queue.factory)."""
        return self._db

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> bool:
        return await self._db.ping()

    # -- plumbing ----------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.transaction(fn)

    @property
    def _quota_defaults(self) -> tuple[int, int]:
        return self.default_quota_bytes, self.default_quota_messages

    # -- mailboxes ---------------------------------------------------------------------------

    async def _provision(self, user: str, listing: bool) -> ProvisionResult:
        if not listing and await self._read(lambda c: rows.user_known(c, user)):
            return ProvisionResult([])  # known: no write transaction for a login
        return await self._write(lambda c: mb.provision(c, user, listing))

    async def _create_mailbox(self, user: str, name: str, special_use: str) -> CreateResult:
        return await self._write(lambda c: mb.create(c, user, name, special_use))

    async def _delete_mailbox(self, user: str, name: str) -> DeleteResult:
        return await self._write(lambda c: mb.delete(c, user, name))

    async def _rename_mailbox(self, user: str, old: str, new: str) -> RenameResult:
        return await self._write(lambda c: mb.rename(c, user, old, new))

    async def _set_subscription(self, user: str, name: str, subscribed: bool) -> None:
        await self._write(lambda c: mb.set_subscription(c, user, name, subscribed))

    async def _list_mailboxes(self, user: str) -> list[Mailbox]:
        return await self._read(lambda c: mb.list_mailboxes(c, user))

    async def _list_subscriptions(self, user: str) -> list[str]:
        return await self._read(lambda c: mb.list_subscriptions(c, user))

    async def _get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._read(lambda c: mb.get(c, user, name))

    # -- messages ----------------------------------------------------------------------------

    async def _deliver(
        self, delivery: Delivery, source: BlobSource | None, index: MessageIndex | None
    ) -> DeliverResult:
        return await self._write(
            lambda c: msg.deliver(c, delivery, source, index, self._quota_defaults)
        )

    async def _check_append(self, user: str, mailbox: str, size: int) -> None:
        await self._read(lambda c: msg.check_append(c, user, mailbox, size, self._quota_defaults))

    async def _append(
        self,
        user: str,
        mailbox: str,
        source: BlobSource,
        flags: tuple[str, ...],
        internal_date: int,
        index: MessageIndex,
        *,
        claim_recent: bool = False,
    ) -> AppendResult:
        fn = functools.partial(
            msg.append, user=user, mailbox=mailbox, source=source, flags=flags,
            internal_date=internal_date, index=index, quota_defaults=self._quota_defaults,
            claim_recent=claim_recent,
        )  # fmt: skip
        return await self._write(fn)

    async def _put_blob(self, source: BlobSource) -> None:
        pin = int(time.time()) + self.upload_pin_seconds
        await self._write(lambda c: rows.store_blob(c, source, 0, pin))

    async def _get_index(self, blob_id: str) -> MessageIndex | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT meta, search, sent_day, wire_ready FROM blob_index WHERE blob_id = ?",
                (blob_id,),
            ).fetchone()
        )
        if row is None:
            return None
        return MessageIndex(bytes(row[0]), bytes(row[1]), row[2], wire_ready=_bit(row[3]))

    async def _put_index(self, blob_id: str, index: MessageIndex) -> None:
        def txn(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM blobs WHERE id = ?", (blob_id,)).fetchone():
                rows.put_index(c, blob_id, index)

        await self._write(txn)

    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        return await self._read(lambda c: msg.list_messages(c, user, mailbox, after_uid, limit))

    async def _list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagListing:
        cache = self._listings
        return await self._read(lambda c: msg.list_flags(c, user, mailbox, after_uid, limit, cache))

    async def _read_content(self, user: str, mailbox: str, uid: int) -> StoredContent:
        def find(conn: sqlite3.Connection) -> _Found:
            mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
            # The first chunk comes with the lookup: most messages are one chunk, so one
            # trip to the connection's thread instead of two.
            row = conn.execute(_FIRST_CHUNK, (mailbox_id, uid)).fetchone()
            if row is None:
                raise NotFound(f"no message with uid {uid} in {mailbox!r}")
            return _found(row)

        return self._content(uid, await self._read(find))

    def _content(self, uid: int, found: _Found, group_end: bool | None = None) -> StoredContent:
        blob_id, size, first, wire_ready = found
        if first is None and size > 0:
            raise DataLoss(f"content of blob {blob_id} (uid {uid}) is missing")
        return StoredContent(self._chunks(blob_id, size, uid, first), wire_ready, group_end)

    async def _read_messages(
        self, user: str, mailbox: str, uids: list[int]
    ) -> AsyncIterator[tuple[int, StoredContent | None]]:
        # The lookups and first chunks of a group of messages in one trip to the connection's
        # thread. Groups grow from 2 (the caller waits for the first messages, and a group is
        # sent only once it has been read whole) to _READ_GROUP messages, and stop at
        # _READ_GROUP_OCTETS of first chunks (ADR 0052: fewer trips for common mail, with
        # less held than 16 large first chunks).
        def find(conn: sqlite3.Connection, start: int, cap: int) -> list[_Found | None]:
            try:
                mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
            except NotFound:
                return [None] * len(uids[start : start + cap])
            want = uids[start : start + cap]
            if len(want) > 1 and all(a < b for a, b in itertools.pairwise(want)):
                return ascending(conn, mailbox_id, want)
            out: list[_Found | None] = []
            octets = 0
            for uid in want:
                row = conn.execute(_FIRST_CHUNK, (mailbox_id, uid)).fetchone()
                out.append(None if row is None else _found(row))
                octets += 0 if row is None or row[2] is None else len(row[2])
                if octets >= _READ_GROUP_OCTETS:
                    break
            return out

        def ascending(
            conn: sqlite3.Connection, mailbox_id: int, want: list[int]
        ) -> list[_Found | None]:
            # The rows come in UID order; each is fetched only when its UID is next, so the
            # group stops at the octet bound without reading a row past it (as the loop above).
            sql = _FIRST_CHUNKS_ASCENDING.format(",".join("?" * len(want)))
            rows = conn.execute(sql, (mailbox_id, *want))
            try:
                out: list[_Found | None] = []
                octets = 0
                row = rows.fetchone()
                for uid in want:
                    if row is None or row[0] != uid:
                        out.append(None)  # not in the mailbox (any more)
                        continue
                    out.append(_found(row[1:]))
                    octets += 0 if row[3] is None else len(row[3])
                    if octets >= _READ_GROUP_OCTETS:
                        break
                    row = rows.fetchone()
                return out
            finally:
                rows.close()

        def read(start: int, cap: int) -> asyncio.Task[list[_Found | None]]:
            return asyncio.ensure_future(self._read(lambda c: find(c, start, cap)))

        # The next group is read while the caller sends this one (ADR 0057): the store's
        # thread and its event loop work side by side, and a message the client will want
        # next is not read only after the previous group went out. At most two groups (2 MiB
        # of first chunks) are held per call.
        i, cap = 0, 2
        ahead: asyncio.Task[list[_Found | None]] | None = read(0, cap)
        try:
            while ahead is not None:
                found = await ahead
                group, i, cap = uids[i : i + len(found)], i + len(found), min(2 * cap, _READ_GROUP)
                if i < len(uids):
                    ahead = read(i, cap)
                    await asyncio.sleep(0)  # let it reach the thread before we yield
                else:
                    ahead = None
                for k, (uid, f) in enumerate(zip(group, found, strict=True), start=1):
                    yield uid, None if f is None else self._content(uid, f, k == len(group))
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()

    async def _get_meta(
        self, user: str, mailbox: str, uids: list[int]
    ) -> list[tuple[int, str, bytes | None]]:
        return await self._read(lambda c: msg.get_meta(c, user, mailbox, uids))

    async def _search(self, user: str, mailbox: str, criteria: store_pb2.SearchKey) -> SearchRows:
        return await self._read(lambda c: msg.search(c, user, mailbox, criteria))

    async def _store_flags(
        self,
        user: str,
        mailbox: str,
        uids: list[int],
        mode: FlagsMode,
        flags: tuple[str, ...],
        unchanged_since: int,
    ) -> FlagsResult:
        # Non-durable (ADR 0041): a flag change neither creates nor removes a message, and
        # the MODSEQ it takes is protected by the advance at open.
        return await self._db.transaction(
            lambda c: msg.store_flags(c, user, mailbox, uids, mode, flags, unchanged_since),
            durable=False,
        )

    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult:
        return await self._write(lambda c: msg.expunge(c, user, mailbox, uids))

    async def _copy(
        self, user: str, mailbox: str, uids: list[int], destination: str, *, move: bool
    ) -> CopyResult:
        return await self._write(
            lambda c: msg.copy(c, user, mailbox, uids, destination, move, self._quota_defaults)
        )

    async def _get_changes(self, user: str, mailbox: str, since: int) -> Changes:
        return await self._read(lambda c: msg.get_changes(c, user, mailbox, since))

    async def _claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim:
        # Non-durable, as flag changes (ADR 0041): a claim lost in a crash leaves its messages
        # recent for the next session, which RFC 3501 section 2.3.2 asks when in doubt.
        return await self._db.transaction(
            lambda c: rows.claim_recent(
                c, rows.require_mailbox(c, user, mailbox, selectable=False), up_to_uid
            ),
            durable=False,
        )

    # -- blobs and quotas --------------------------------------------------------------------

    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        row = await self._read(
            lambda c: c.execute("SELECT size FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"blob {blob_id} is not stored")
        return self._chunks(blob_id, int(row[0]), 0)

    async def _chunks(
        self, blob_id: str, size: int, uid: int, first: bytes | None = None
    ) -> AsyncIterator[bytes]:
        # Chunk by chunk, each its own short read, so a large message never sits in memory
        # and never holds the connection while the client is slow. ``first``: chunk 0,
        # already read.
        start = 0
        if first is not None:
            yield first
            start = 1
        for n in range(start, chunk_count(size)):
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

    async def _blob_refcount(self, blob_id: str) -> int | None:
        row = await self._read(
            lambda c: c.execute("SELECT refcount FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        )
        return None if row is None else int(row[0])

    async def _get_quota(self, user: str) -> Quota:
        return await self._read(lambda c: rows.quota(c, user, *self._quota_defaults))

    async def _set_quota(self, user: str, storage_bytes: int, messages: int) -> Quota:
        def txn(c: sqlite3.Connection) -> Quota:
            rows.require_user(c, user)
            c.execute(
                "UPDATE users SET storage_limit = ?, message_limit = ? WHERE user = ?",
                (storage_bytes, messages, user),
            )
            return rows.quota(c, user, *self._quota_defaults)

        return await self._write(txn)

    # -- janitor (postmesh.store.leftovers) --------------------------------------------------

    @property
    def kinds(self) -> tuple[str, ...]:
        return (lo.UPLOAD_PINS, lo.BLOBS, lo.TOMBSTONES, lo.DELIVERIES, lo.PAGES, lo.UNINDEXED)

    async def collect(self, kind: str, cutoffs: Cutoffs, limit: int) -> int:
        if kind == lo.UPLOAD_PINS:
            return await self._write(lambda c: janitor.upload_pins(c, cutoffs.now, limit))
        if kind == lo.BLOBS:
            return await self._write(lambda c: janitor.blobs(c, cutoffs.now, limit))
        if kind == lo.TOMBSTONES:
            return await self._write(lambda c: janitor.tombstones(c, cutoffs.tombstones, limit))
        if kind == lo.DELIVERIES:
            return await self._write(lambda c: janitor.deliveries(c, cutoffs.deliveries, limit))
        if kind == lo.PAGES:
            return await self._read(lambda c: janitor.free_pages(c, limit))
        if kind == lo.UNINDEXED:
            return await self._index_unindexed(limit)
        raise ValueError(f"unknown leftover kind {kind!r}")

    async def _index_unindexed(self, limit: int) -> int:
        """Contents an old version stored without indexing them, parsed and indexed as a read
        of one would heal it (``_heal_index``); the last call drops the file's fact, so header
        SEARCH stops looking for such contents (ADR 65, ADR 70). Returns how many were
        indexed. A scan in blob id order goes on from call to call, so contents that cannot
        be indexed never hold back those after them."""
        after = self._unindexed_after
        found = await self._read(lambda c: janitor.unindexed_blobs(c, after, limit))
        if found is None:
            # The usual case: nothing to do, and no scan of every message under the write
            # lock at each pass to find that out.
            return 0
        indexed = 0
        for blob_id in found:
            try:
                await self._heal_index(blob_id)
                indexed += 1
            except NotFound:
                pass  # its last message went meanwhile, and the blob with it
            except DataLoss as e:
                # Unreadable content stays unindexed (and the fact with it): a read of its
                # message reports the same loss. Logged at each pass until it is dealt with.
                log.warning(
                    "stored content cannot be indexed", extra=kv(blob_id=blob_id, error=str(e))
                )
        if len(found) == limit:
            self._unindexed_after = found[-1]
            return indexed
        # The scan reached the end: the next one starts over, and if nothing is left anywhere
        # (checked again under the write lock) the fact goes.
        self._unindexed_after = ""
        if await self._write(janitor.drop_unindexed_fact):
            log.info("every stored content is indexed: header searches skip the look-up")
        return indexed

    async def census(self) -> dict[str, int]:
        return await self._read(janitor.census)
