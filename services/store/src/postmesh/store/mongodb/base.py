"""Collections, users, mailbox documents and the shared write primitives of the MongoDB backend.

Collections (prefix ``store_``):
- ``users``:         {_id: user, next_uidvalidity, provisioned, storage_limit?, message_limit?}
- ``mailboxes``:     {_id, user, name, uidvalidity, uidnext, highestmodseq, special_use,
                      noselect, pending, vanished_floor}; unique (user, name); ``pending``
                      marks allocations whose writes are not done (``watermark.py``);
                      ``vanished_floor`` the highest MODSEQ of tombstones the janitor removed
- ``subscriptions``: {_id: key, user, name}
- ``messages``:      {_id, mailbox_id, user, uid, modseq, flags, internal_date, size, blob_id,
                      sent_day, wire_ready, expunged, released, expunged_at}; unique
                      (mailbox_id, uid);
                      an expunged message stays as a tombstone (no content) with its expunge
                      MODSEQ, until the janitor removes it (``leftovers.py``)
- ``deliveries``:    Deliver's idempotency records (see ``delivery.py``)
- ``delivered``:     {_id: delivery key, uid, modseq, uidvalidity, mailbox}: a delivery's
                     outcome, once done (``delivery.py``, ADR 67)
- ``intents``:       multi-document operations in flight (see ``intents.py``)
- ``quota_reservations``, ``quota_leases``: what limited writes in flight add, and the
                     per-user quota lock (see ``reservations.py``)
- the blob collections of ``blobs.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import CollectionInvalid, DuplicateKeyError, PyMongoError

from postmesh.common.lru import Lru
from postmesh.common.stamped_cache import StampedCache
from postmesh.store import quota as q
from postmesh.store.errors import FailedPrecondition, NotFound, QuotaExceeded, UnknownUser
from postmesh.store.hierarchy import child_range
from postmesh.store.model import Mailbox, Message, Quota
from postmesh.store.mongodb import pg_indexes, watermark
from postmesh.store.mongodb.blobs import MongoBlobStore
from postmesh.store.mongodb.by_id import ByIdReader
from postmesh.store.mongodb.coalesce import InsertBatcher, UpdateSlots
from postmesh.store.mongodb.grouping import Groups
from postmesh.store.mongodb.locks import KeyedLocks
from postmesh.store.mongodb.replicas import ReplicaWatch
from postmesh.store.mongodb.reservations import QuotaGate, bound_filter
from postmesh.store.mongodb.snapshots import Snapshots
from postmesh.store.repository import StoreRepository
from postmesh.store.validation import DELETED, SEEN

Doc = dict[str, Any]
Counts = tuple[int, int, int, int]  # messages, seen, deleted, size


def key_of(*parts: str) -> str:
    """A deterministic document id for a tuple of strings."""
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()


# The change stamp of the users' documents (limits), read by every replica's user cache.
USERS_STAMP = "users"


def _provisioned(doc: Doc | None) -> bool:
    return doc is not None and bool(doc.get("provisioned"))


def to_message(doc: Doc) -> Message:
    return Message(
        int(doc["uid"]), tuple(doc["flags"]), int(doc["size"]), int(doc["internal_date"]),
        int(doc["modseq"]), str(doc["blob_id"]),
    )  # fmt: skip


def first_recent_uid(doc: Doc) -> int:
    """IMAP4rev1 \\Recent: no session has claimed the messages from this UID on (a mailbox
    from before the field: every message, as RFC 3501 section 2.3.2 asks when in doubt)."""
    return int(doc.get("first_recent_uid", 1))


class MongoBase(StoreRepository):
    transient_errors = (PyMongoError,)

    def __init__(
        self,
        url: str | None,
        database: str,
        *,
        client: AsyncMongoClient[Doc] | None = None,
        user_cache_seconds: float = 0.0,
        **limits: int,
    ) -> None:
        """``user_cache_seconds``: how long a Deliver may use a user's document read before
        (0: never), bounded by the users' change stamp (``_touch_users``, ADR 55)."""
        super().__init__(**limits)
        self._client: AsyncMongoClient[Doc] = client or AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        db = self._client[database]
        self._users = db["store_users"]
        self._mailboxes = db["store_mailboxes"]
        self._subscriptions = db["store_subscriptions"]
        self._messages = db["store_messages"]
        self._deliveries = db["store_deliveries"]
        self._delivered = db["store_delivered"]
        self._intents = db["store_intents"]
        self._stamps = db["store_change_stamps"]
        self._user_cache: StampedCache[str, Doc | None] | None = (
            StampedCache(self._users_stamp, user_cache_seconds) if user_cache_seconds > 0 else None
        )
        self._delivery_inserts = InsertBatcher(self._deliveries)
        self._outcome_inserts = InsertBatcher(self._delivered)
        # Multi-statement update commands (blob completions).
        self._update_slots = UpdateSlots()
        self._locks = KeyedLocks()
        self._groups = Groups()
        self._counters = watermark.Counters()
        # (user, name) -> {_id, name, uidvalidity} of a selectable mailbox, as a Deliver last
        # read it (_delivery_mailbox).
        self._delivery_boxes: Lru[tuple[str, str], Doc] = Lru(50_000)
        self._snapshots = Snapshots(self._messages, self._mailboxes)
        self._unsettled: dict[ObjectId, list[str]] = {}
        self._quota_gate = QuotaGate(
            db["store_quota_reservations"], db["store_quota_leases"], self._locks, self._usage
        )
        self.blobs = MongoBlobStore(
            db["store_blobs"], db["store_blob_chunks"], db["store_blob_refs"],
            db["store_blob_index"], self._update_slots,
        )  # fmt: skip
        self._index_by_id = ByIdReader(self.blobs.index)
        self._messages_by_id = ByIdReader(self._messages)
        # Started by the service (not by tests that open a repository): replicas.py.
        self.replica_watch = ReplicaWatch(db["store_replicas"])

    async def open(self) -> None:
        await self._mailboxes.create_index([("user", ASCENDING), ("name", ASCENDING)], unique=True)
        await self._messages.create_index(
            [("mailbox_id", ASCENDING), ("uid", ASCENDING)], unique=True
        )
        await self._messages.create_index([("mailbox_id", ASCENDING), ("modseq", ASCENDING)])
        await self._messages.create_index([("user", ASCENDING), ("expunged", ASCENDING)])
        await self._subscriptions.create_index([("user", ASCENDING), ("name", ASCENDING)])
        await self._intents.create_index([("user", ASCENDING)])
        # The janitor's queries (mongodb/leftovers.py).
        await self._messages.create_index([("expunged", ASCENDING), ("expunged_at", ASCENDING)])
        await self._deliveries.create_index([("created_at", ASCENDING)])
        await self._intents.create_index([("lease_until", ASCENDING)])
        await self._quota_gate.create_indexes()
        await self.blobs.create_indexes()
        # Every collection the operator's script for FerretDB (pg_indexes.py) lists exists
        # from the first start, which the script is run after: those read by _id only have no
        # index of their own to create them (store_blobs and store_blob_index had been left to
        # their first insert, and so without their GIN indexes and compression setting).
        db = self._delivered.database
        missing = {c for c, _ in pg_indexes.FIELDS} - set(await db.list_collection_names())
        for name in sorted(missing):
            with contextlib.suppress(CollectionInvalid):  # another replica made it meanwhile
                await db.create_collection(name)

    async def close(self) -> None:
        await self._groups.stop()
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    # -- users -------------------------------------------------------------------------------

    async def _user_doc(self, user: str) -> Doc | None:
        doc = await self._users.find_one({"_id": user})
        if doc is None and await self._mailboxes.find_one({"user": user}, {"_id": 1}):
            # Stored before users existed: known, with a counter above its UIDVALIDITYs.
            top = await self._mailboxes.find_one(
                {"user": user}, {"uidvalidity": 1}, sort=[("uidvalidity", DESCENDING)]
            )
            assert top is not None
            doc = {
                "_id": user, "next_uidvalidity": int(top["uidvalidity"]) + 1,
                "provisioned": True, "created_at": time.time(),
            }  # fmt: skip
            try:
                await self._users.insert_one(doc)
            except DuplicateKeyError:
                doc = await self._users.find_one({"_id": user})
        return doc

    async def _delivery_user_doc(self, user: str) -> Doc | None:
        """The user's document for a Deliver: what it needs of it (provisioned, its limits)
        changes only by provisioning, which never goes back, and by SetQuota, which replaces
        the users' change stamp. So a provisioned user's document is kept (ADR 55)."""
        if self._user_cache is None:
            return await self._user_doc(user)
        doc, _ = await self._user_cache.get(user, self._user_doc, _provisioned)
        return doc

    async def _users_stamp(self) -> str:
        d = await self._stamps.find_one({"_id": USERS_STAMP})
        return str(d["value"]) if d else ""

    async def _touch_users(self) -> None:
        """After a write of a user document that Deliver reads (its limits): this replica
        forgets its kept documents, the others when they next read the stamp. A crash before
        the stamp leaves theirs until their TTL."""
        await self._stamps.replace_one(
            {"_id": USERS_STAMP}, {"value": uuid.uuid4().hex}, upsert=True
        )
        if self._user_cache is not None:
            self._user_cache.forget_all()

    async def _require_user(self, user: str) -> Doc:
        doc = await self._user_doc(user)
        if doc is None or not doc.get("provisioned"):
            raise UnknownUser(user)
        return doc

    async def _next_uidvalidity(self, user: str) -> int:
        """Caller holds the user lock (the $inc is not atomic on FerretDB 1.24)."""
        before = await self._users.find_one_and_update(
            {"_id": user}, {"$inc": {"next_uidvalidity": 1}}, return_document=ReturnDocument.BEFORE
        )
        if before is None:
            raise UnknownUser(user)
        return int(before["next_uidvalidity"]) & 0xFFFFFFFF or 1

    async def _sum(self, match: Doc, value: Any, by: Any = None) -> dict[Any, int]:
        """One $group sum per pipeline: FerretDB 1.24 computes only the first accumulator of
        a $group (the others come back 0)."""
        pipeline: list[Doc] = [{"$match": match}, {"$group": {"_id": by, "v": {"$sum": value}}}]
        rows = await (await self._messages.aggregate(pipeline)).to_list(None)
        return {r["_id"]: int(r["v"]) for r in rows}

    async def _usage(self, user: str, unbound: list[str]) -> tuple[int, int]:
        """Bytes and count of the user's live messages, leaving out those bound to the
        reservations ``unbound`` (``reservations.py``)."""
        live = {"user": user, "expunged": False, **bound_filter(unbound)}
        n = (await self._sum(live, 1)).get(None, 0)
        return ((await self._sum(live, "$size")).get(None, 0) if n else 0), n

    def _limits(self, doc: Doc) -> tuple[int, int]:
        return (
            q.effective(doc.get("storage_limit"), self.default_quota_bytes),
            q.effective(doc.get("message_limit"), self.default_quota_messages),
        )

    async def _quota(self, user: str, doc: Doc | None = None) -> Quota:
        doc = doc or await self._require_user(user)
        size, n = await self._usage(user, [])
        storage, messages = self._limits(doc)
        return Quota(size, storage, n, messages)

    async def _check_quota(
        self, user: str, add_bytes: int, add_messages: int, doc: Doc | None = None
    ) -> None:
        """An early check (before Append reads the content): what is stored and reserved, read
        without the quota lock. Computed only when a limit applies. ``doc``: the provisioned
        user's document, when the caller has just read it."""
        doc = doc or await self._require_user(user)
        storage, messages = self._limits(doc)
        if storage or messages:
            used_bytes, used_messages = await self._quota_gate.used(user)
            q.check(Quota(used_bytes, storage, used_messages, messages), add_bytes, add_messages)

    async def _reserve_quota(
        self, user: str, rid: str, add_bytes: int, add_messages: int, doc: Doc | None = None
    ) -> bool:
        """Reserve what a write adds under the user's limits (QuotaExceeded if it does not
        fit), exactly across concurrent writers and replicas (``reservations.py``). False,
        and nothing stored, when no limit applies. Its messages must be bound to ``rid``; drop
        the reservation (:meth:`_drop_reservation`) once they exist."""
        if doc is None or not doc.get("provisioned"):
            doc = await self._require_user(user)
        storage, messages = self._limits(doc)
        if not (storage or messages):
            return False
        try:
            await self._quota_gate.reserve(user, rid, add_bytes, add_messages, storage, messages)
        except QuotaExceeded:
            # A retried Deliver whose message a concurrent attempt wrote (and whose
            # reservation it dropped) meanwhile adds nothing.
            if await self._messages.find_one({"_id": rid}, {"_id": 1}):
                return False
            raise
        return True

    async def _drop_reservation(self, rid: str) -> None:
        await self._quota_gate.drop(rid)

    # -- mailboxes ---------------------------------------------------------------------------

    async def _mailbox_doc(self, user: str, name: str, *, selectable: bool = True) -> Doc:
        doc = await self._mailboxes.find_one({"user": user, "name": name})
        if doc is None:
            await self._require_user(user)
            raise NotFound(f"mailbox {name!r} of {user} does not exist")
        if selectable and doc.get("noselect"):
            raise FailedPrecondition(f"mailbox {name!r} is not selectable (\\Noselect)")
        return doc

    async def _insert_mailbox(self, user: str, name: str, special_use: str = "") -> Doc | None:
        """The new mailbox, or None if it exists (the unique index decides a race). Caller
        holds the user lock."""
        if await self._mailboxes.find_one({"user": user, "name": name}, {"_id": 1}):
            return None
        doc: Doc = {
            "_id": ObjectId(), "user": user, "name": name,
            "uidvalidity": await self._next_uidvalidity(user), "uidnext": 1, "highestmodseq": 1,
            "special_use": special_use, "noselect": False, "created_at": time.time(),
        }  # fmt: skip
        try:
            await self._mailboxes.insert_one(doc)
        except DuplicateKeyError:
            return None
        return doc

    async def _delivery_mailbox(self, user: str, name: str) -> Doc | None:
        """The mailbox a Deliver writes to, or None. A selectable one is kept in this process
        (one read fewer per message): of what Deliver uses, its _id and UIDVALIDITY never
        change, and the allocation's filter (_id, name, not \\Noselect) refuses a kept
        document whose mailbox was renamed, deleted or made \\Noselect since, anywhere; the
        Deliver then forgets it and reads again (``_write_current``)."""
        key = (user, name)
        if (kept := self._delivery_boxes.get(key)) is not None:
            return kept
        doc = await self._mailboxes.find_one(
            {"user": user, "name": name}, {"name": 1, "uidvalidity": 1, "noselect": 1}
        )
        if doc is not None and not doc.get("noselect"):
            self._delivery_boxes.put(key, doc)
        return doc

    async def _has_children(self, user: str, name: str) -> bool:
        low, high = child_range(name)
        found = await self._mailboxes.find_one(
            {"user": user, "name": {"$gte": low, "$lt": high}}, {"_id": 1}
        )
        return found is not None

    async def _subscribed(self, user: str, name: str) -> bool:
        return await self._subscriptions.find_one({"_id": key_of(user, name)}) is not None

    async def _counts(self, match: Doc) -> dict[ObjectId, Counts]:
        """Message counts per mailbox of the live messages matching ``match``; derived, not
        counters, so a writer dying between two writes cannot make them drift. One pass over
        the messages' flags and sizes: FerretDB 1.24 runs a $group by reading every matching
        document whole and computes one accumulator per pipeline, so the four sums as
        pipelines read each message four times (ADR 60)."""
        counts: dict[ObjectId, list[int]] = {}
        async for doc in self._messages.find(
            {**match, "expunged": False}, {"_id": 0, "mailbox_id": 1, "flags": 1, "size": 1}
        ):
            c = counts.get(doc["mailbox_id"])
            if c is None:
                c = counts[doc["mailbox_id"]] = [0, 0, 0, 0]
            flags = doc["flags"]
            c[0] += 1
            c[1] += SEEN in flags
            c[2] += DELETED in flags
            c[3] += int(doc["size"])
        return {mid: (n, seen, deleted, size) for mid, (n, seen, deleted, size) in counts.items()}

    @staticmethod
    def _to_mailbox(
        doc: Doc, counts: Counts, *, subscribed: bool, children: bool, recent: int = 0
    ) -> Mailbox:
        total, seen, deleted, size = counts
        uidnext, highestmodseq = watermark.visible(doc, time.time())
        return Mailbox(
            str(doc["_id"]), doc["user"], doc["name"], int(doc["uidvalidity"]),
            uidnext, highestmodseq, total, total - seen,
            doc.get("special_use", ""), subscribed, deleted, size, bool(doc.get("noselect")),
            children, first_recent_uid(doc), recent,
        )  # fmt: skip

    async def _load_mailbox(self, doc: Doc) -> Mailbox:
        recent = 0
        if doc.get("noselect"):  # its messages may be going without tombstones (snapshots.py)
            counts = (await self._counts({"mailbox_id": doc["_id"]})).get(doc["_id"], (0,) * 4)
        else:
            snap = await self._snapshots.current(doc)
            counts = snap.counts()
            uidnext, _ = watermark.visible(doc, time.time())
            recent = snap.count_between(first_recent_uid(doc), uidnext)
        return self._to_mailbox(
            doc, counts,
            subscribed=await self._subscribed(doc["user"], doc["name"]),
            children=await self._has_children(doc["user"], doc["name"]),
            recent=recent,
        )  # fmt: skip

    async def _raise_first_recent(self, mailbox_id: ObjectId, last: int) -> int | None:
        """Claim \\Recent up to UID ``last``: the mailbox's first unclaimed UID before (the
        claim is from there), None if the mailbox is gone. By ``$max``, so of two claims the
        later gets the other's end as its start; the caller holds the mailbox's lock, as for
        every write of its document (FerretDB 1.24 applies an update as read-then-write-back,
        ADR 37: without the lock two claims both won in the contract test)."""
        before = await self._mailboxes.find_one_and_update(
            {"_id": mailbox_id},
            {"$max": {"first_recent_uid": last + 1}},
            # No projection: FerretDB 1.24 does not implement findAndModify's "fields".
            return_document=ReturnDocument.BEFORE,
        )
        return None if before is None else first_recent_uid(before)

    async def _recent_counts(self, docs: list[Doc]) -> dict[ObjectId, int]:
        """STATUS RECENT of these mailboxes: a count only where a message is unclaimed."""
        out: dict[ObjectId, int] = {}
        now = time.time()
        for doc in docs:
            first, uidnext = first_recent_uid(doc), watermark.visible(doc, now)[0]
            if doc.get("noselect") or first >= uidnext:
                continue
            out[doc["_id"]] = await self._messages.count_documents(
                {
                    "mailbox_id": doc["_id"],
                    "expunged": False,
                    "uid": {"$gte": first, "$lt": uidnext},
                }
            )
        return out

    async def _allocate(
        self, mailbox_id: ObjectId, uids: int, token: str | None = None
    ) -> tuple[int, int]:
        """Take ``uids`` UIDs (0 for none) and one MODSEQ: (first uid, modseq), marked pending
        until the caller's :meth:`_mailbox_writes` block ends (``watermark.py``). ``token``
        names the mark when a retry must be able to clear a crashed attempt's mark (see
        :meth:`_settle_later`). Caller holds the mailbox lock. A mailbox deleted or made
        \\Noselect meanwhile takes none."""
        return await self._allocate_each(mailbox_id, uids, 1, [token or uuid.uuid4().hex])

    async def _allocate_each(
        self,
        mailbox_id: ObjectId,
        uids: int,
        modseqs: int,
        tokens: list[str],
        name: str | None = None,
    ) -> tuple[int, int]:
        """:meth:`_allocate` of ``uids`` UIDs and ``modseqs`` MODSEQs in one update, with a
        pending mark per token (a grouped Deliver marks each of its deliveries under its own
        name): (first uid, first modseq). ``name``: the mailbox must still be called that (a
        Deliver's mailbox document may have been read a while ago)."""
        floor = self._counters.get(mailbox_id)
        if floor is None:
            doc = await self._mailboxes.find_one(
                {"_id": mailbox_id}, {"uidnext": 1, "highestmodseq": 1}
            )
            floor = (int(doc["uidnext"]), int(doc["highestmodseq"])) if doc else (0, 0)
        now = time.time()
        entry = watermark.mark(floor[1] + 1, floor[0], now)
        before = await self._mailboxes.find_one_and_update(
            {
                "_id": mailbox_id,
                "noselect": {"$ne": True},
                **({"name": name} if name is not None else {}),
            },
            {
                # "changes" counts the allocations that change existing messages (flags,
                # expunges): snapshots.py reads new messages alone by UID while it stands.
                "$inc": {
                    "uidnext": uids,
                    "highestmodseq": modseqs,
                    **({} if uids else {"changes": 1}),
                },
                "$set": {f"{watermark.FIELD}.{token}": entry for token in tokens},
            },
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            raise NotFound("mailbox was deleted, renamed or made \\Noselect")
        first, modseq = int(before["uidnext"]), int(before["highestmodseq"]) + 1
        self._counters.put(mailbox_id, (first + uids, modseq + modseqs - 1))
        self._settle_later(mailbox_id, *tokens, *watermark.stale_keys(before, now))
        return first, modseq

    def _settle_later(self, mailbox_id: ObjectId, *tokens: str) -> None:
        """Clear these marks when the current :meth:`_mailbox_writes` block ends: its own, dead
        writers' stale ones, or the one a crashed attempt of the same retried write left."""
        self._unsettled.setdefault(mailbox_id, []).extend(tokens)

    @contextlib.asynccontextmanager
    async def _mailbox_writes(self, *mailbox_ids: ObjectId) -> AsyncIterator[None]:
        """Hold the mailboxes' locks for a write; at the end, clear the pending marks of the
        allocations made in it (``watermark.py``), done or failed alike."""
        async with self._locks.hold_all(list(mailbox_ids)):
            try:
                yield
            finally:
                for mailbox_id in mailbox_ids:
                    if keys := self._unsettled.pop(mailbox_id, None):
                        await self._mailboxes.update_one(
                            {"_id": mailbox_id},
                            {"$unset": {f"{watermark.FIELD}.{k}": "" for k in keys}},
                        )

    # -- messages ----------------------------------------------------------------------------

    async def _release(self, docs: list[Doc]) -> None:
        """Drop the blob references of tombstoned or doomed messages, then mark them released
        (each step idempotent: a crash in between is finished by the next pass)."""
        for doc in docs:
            await self.blobs.release(doc["_id"], doc["blob_id"])
            await self._messages.update_one({"_id": doc["_id"]}, {"$set": {"released": True}})
