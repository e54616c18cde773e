"""Queue and locks on the MongoDB API, exclusive on FerretDB 1.24 too.

FerretDB 1.24 applies an update as read-then-write, so neither ``$inc`` nor a conditional
``findAndModify`` is atomic there (see the store README); only an insert into a unique index
is. Every decision that must have one winner is therefore an insert of a document whose ``_id``
is derived from state the caller read:

Deferred queue (``store_queue`` + ``store_queue_transitions``). Every change of an entry gets
the next generation number: changing an entry that shows generation g means inserting its
transition g+1 (``_id`` "<incarnation>:<g+1>"). Of all replicas that read generation g, exactly
one insert succeeds; only that replica writes the new state into the entry document. The entry
document is a cache for queries (``ready_at`` index); the transitions are the truth. A transition
carries the whole new state, so whoever finds transition g+1 while the entry still shows g (its
writer is slow or died) rolls the entry forward itself, and a stale entry document (a slow
roll-forward overwriting a newer one) can only cost a failed insert, never a second owner. The
lease holder is the owner of the newest transition when that is a claim (or of generation 0, the
insert, when Enqueue leased the new entry to its caller). The incarnation (a random id per
Enqueue) keeps the transitions of a deleted entry from blocking a new one.

Maildrop locks (``store_maildrop_locks``): a document per acquisition, ``_id`` [user, gen].
Acquiring inserts gen+1 after reading gen as free; renewing extends the holder's own document.
A taker inserts, then re-reads the holder; a renewer writes, then looks for a successor: one of
the two always sees the other (Dekker), so two sessions never both hold a maildrop.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from postmesh.store import leftovers as lo
from postmesh.store.errors import NotFound, Unavailable
from postmesh.store.leftovers import Cutoffs, Leftovers
from postmesh.store.queue.model import LeaseNotHeld, LockState, NewEntry, QueueEntry, QueueStats
from postmesh.store.queue.repository import Clock, QueueRepository

Doc = dict[str, Any]
CLAIM, RELEASE, DELETE = "claim", "release", "delete"
# Bounds on retries and roll-forwards under contention (each step is a round trip).
MAX_STEPS = 50
LOCK_RETRIES = 5


def _key(queue_id: str, rcpt: str) -> str:
    return json.dumps([queue_id, rcpt])


def _tid(incarnation: str, gen: int) -> str:
    return f"{incarnation}:{gen}"


def _lock_id(user: str, gen: int) -> str:
    return json.dumps([user, gen])


def _entry(doc: Doc) -> QueueEntry:
    return QueueEntry(
        doc["queue_id"], doc["recipient"], bytes(doc["envelope"]), doc["blob_id"],
        int(doc["attempts"]), int(doc["next_attempt_at"]), doc["last_error"], doc["owner"],
        int(doc["lease_until"]), int(doc["created_at"]), _notified(doc),
    )  # fmt: skip


def _notified(doc: Doc) -> int:
    """The entry's delay notice time; absent (0) in an entry made before delay notices."""
    return int(doc.get("delay_notified_at", 0))


class MongoQueueRepository(QueueRepository, Leftovers):
    transient_errors = (PyMongoError,)

    def __init__(
        self,
        url: str | None,
        database: str,
        *,
        client: AsyncMongoClient[Doc] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self._client: AsyncMongoClient[Doc] = client or AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        db = self._client[database]
        self._entries = db["store_queue"]
        self._transitions = db["store_queue_transitions"]
        self._locks = db["store_maildrop_locks"]
        self._sweep_from: str | None = None  # the janitor's place in the transitions

    async def open(self) -> None:
        await self._entries.create_index([("ready_at", ASCENDING)])
        await self._entries.create_index([("queue_id", ASCENDING)])
        await self._transitions.create_index([("inc", ASCENDING)])
        await self._locks.create_index([("user", ASCENDING), ("gen", ASCENDING)])

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    # -- generations -------------------------------------------------------------------------

    async def _advance(self, doc: Doc, kind: str, state: Doc, now: int) -> Doc | None:
        """Insert transition gen+1 of ``doc``: the transition when this caller won it, None
        when another caller changed the entry from this generation first."""
        gen = int(doc["gen"]) + 1
        t: Doc = {
            "_id": _tid(doc["inc"], gen), "entry": doc["_id"], "inc": doc["inc"], "gen": gen,
            "kind": kind, "state": {**state, "gen": gen}, "at": now,
        }  # fmt: skip
        try:
            await self._transitions.insert_one(t)
        except DuplicateKeyError:
            return None
        return t

    async def _apply(self, doc: Doc, t: Doc) -> Doc | None:
        """Write transition ``t`` into the entry document (idempotent; never backwards).
        Returns the entry as it is after ``t``, None if ``t`` deleted it."""
        if t["kind"] == DELETE:
            await self._entries.delete_one({"_id": doc["_id"], "inc": doc["inc"]})
            await self._transitions.delete_many({"inc": doc["inc"]})
            return None
        await self._entries.update_one(
            {"_id": doc["_id"], "inc": doc["inc"], "gen": {"$lt": t["gen"]}}, {"$set": t["state"]}
        )
        return {**doc, **t["state"]}

    async def _next(self, doc: Doc) -> Doc | None:
        return await self._transitions.find_one({"_id": _tid(doc["inc"], int(doc["gen"]) + 1)})

    async def _current(self, key: str) -> Doc | None:
        """The entry at its newest generation (rolled forward), None if there is none."""
        doc = await self._entries.find_one({"_id": key})
        for _ in range(MAX_STEPS):
            if doc is None:
                return None
            t = await self._next(doc)
            if t is None:
                return doc
            doc = await self._apply(doc, t)
        raise Unavailable("queue entry is changing too fast; retry")

    async def _held(self, key: str, who: str) -> Doc:
        doc = await self._current(key)
        if doc is None:
            raise NotFound(f"no queue entry {key}")
        if doc["owner"] != who:
            raise LeaseNotHeld(f"{who} does not hold the lease of {key}")
        return doc

    # -- deferred queue ----------------------------------------------------------------------

    async def _enqueue(self, entry: NewEntry, now: int) -> tuple[QueueEntry, bool]:
        key = _key(entry.queue_id, entry.recipient)
        # Born leased: generation 0 holds the lease as a claim's transition would; whoever
        # takes it over after expiry must win transition 1, as for any claim.
        until = now + entry.lease_seconds * 1000 if entry.lease_owner else 0
        doc: Doc = {
            "_id": key, "inc": uuid.uuid4().hex, "queue_id": entry.queue_id,
            "recipient": entry.recipient, "envelope": entry.envelope, "blob_id": entry.blob_id,
            "created_at": now, "gen": 0, "owner": entry.lease_owner, "lease_until": until,
            "next_attempt_at": entry.next_attempt_at_ms, "attempts": entry.attempts,
            "last_error": entry.last_error, "delay_notified_at": 0,
            "ready_at": max(entry.next_attempt_at_ms, until),
        }  # fmt: skip
        for _ in range(LOCK_RETRIES):
            try:
                await self._entries.insert_one(dict(doc))
            except DuplicateKeyError:
                found = await self._current(key)
                if found is not None:
                    return _entry(found), True
                continue  # it was being deleted: insert again
            return _entry(doc), False
        raise Unavailable("queue entry is contended; retry")

    async def _get(self, queue_id: str, rcpt: str) -> QueueEntry | None:
        doc = await self._current(_key(queue_id, rcpt))
        return None if doc is None else _entry(doc)

    async def _claim_due(self, who: str, limit: int, lease_ms: int, now: int) -> list[QueueEntry]:
        out: list[QueueEntry] = []
        cursor = (
            self._entries.find({"ready_at": {"$lte": now}})
            .sort([("ready_at", ASCENDING), ("_id", ASCENDING)])
            .batch_size(max(2 * limit, 16))
        )
        try:
            async for doc in cursor:
                entry = await self._claim_one(doc, who, now + lease_ms, now)
                if entry is not None:
                    out.append(entry)
                    if len(out) >= limit:
                        break
        finally:
            await cursor.close()
        return out

    async def _claim_one(
        self, doc: Doc | None, who: str, until: int, now: int
    ) -> QueueEntry | None:
        for _ in range(MAX_STEPS):
            if doc is None or int(doc["ready_at"]) > now:
                return None
            state = {
                "owner": who, "lease_until": until, "ready_at": until,
                "next_attempt_at": doc["next_attempt_at"], "attempts": doc["attempts"],
                "last_error": doc["last_error"], "delay_notified_at": _notified(doc),
            }  # fmt: skip
            t = await self._advance(doc, CLAIM, state, now)
            if t is None:
                # Someone changed it from this generation: look at the entry as it is now.
                nxt = await self._next(doc)
                doc = None if nxt is None else await self._apply(doc, nxt)
                continue
            mine = await self._apply(doc, t)
            assert mine is not None
            # Verify after inserting: the entry may have been deleted (its transitions with
            # it) between our read and our insert, or re-enqueued as a new incarnation.
            check = await self._entries.find_one({"_id": doc["_id"]})
            if check is None or check["inc"] != doc["inc"]:
                await self._transitions.delete_one({"_id": t["_id"]})
                return None
            if int(check["gen"]) < int(t["gen"]):
                await self._apply(check, t)  # a slow roll-forward overwrote ours
            elif int(check["gen"]) > int(t["gen"]):
                return None  # already taken over (clock skew between replicas)
            return _entry(mine)
        return None

    async def _claim(
        self, queue_id: str, rcpt: str, who: str, lease_ms: int, now: int
    ) -> QueueEntry:
        key = _key(queue_id, rcpt)
        for _ in range(MAX_STEPS):
            doc = await self._current(key)
            if doc is None:
                raise NotFound(f"no queue entry {key}")
            if doc["owner"] not in ("", who) and int(doc["lease_until"]) > now:
                raise LeaseNotHeld(f"{doc['owner']} holds the lease of {key}")
            until = now + lease_ms
            state = {
                "owner": who, "lease_until": until, "ready_at": until,
                "next_attempt_at": doc["next_attempt_at"], "attempts": doc["attempts"],
                "last_error": doc["last_error"], "delay_notified_at": _notified(doc),
            }  # fmt: skip
            t = await self._advance(doc, CLAIM, state, now)
            if t is None:
                continue  # changed meanwhile: re-read and re-check the lease
            mine = await self._apply(doc, t)
            assert mine is not None
            # As in _claim_one: the entry may have been deleted or re-enqueued meanwhile.
            check = await self._entries.find_one({"_id": key})
            if check is None or check["inc"] != doc["inc"]:
                await self._transitions.delete_one({"_id": t["_id"]})
                raise NotFound(f"no queue entry {key}")
            if int(check["gen"]) < int(t["gen"]):
                await self._apply(check, t)
            elif int(check["gen"]) > int(t["gen"]):
                continue
            return _entry(mine)
        raise Unavailable("queue entry is contended; retry")

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
        key = _key(queue_id, rcpt)
        for _ in range(MAX_STEPS):
            doc = await self._held(key, who)
            state = {
                "owner": "", "lease_until": 0, "ready_at": next_at, "next_attempt_at": next_at,
                "attempts": int(doc["attempts"]) + 1, "last_error": last_error,
                "delay_notified_at": _notified(doc) or notified_at,
            }  # fmt: skip
            t = await self._advance(doc, RELEASE, state, now)
            if t is None:
                continue  # changed meanwhile: re-read and re-check the lease
            after = await self._apply(doc, t)
            assert after is not None
            return _entry(after)
        raise Unavailable("queue entry is contended; retry")

    async def _delete(self, queue_id: str, rcpt: str, who: str, now: int) -> None:
        key = _key(queue_id, rcpt)
        for _ in range(MAX_STEPS):
            doc = await self._held(key, who)
            t = await self._advance(doc, DELETE, {}, now)
            if t is not None:
                await self._apply(doc, t)
                return
        raise Unavailable("queue entry is contended; retry")

    async def _list(
        self, queue_id: str, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[QueueEntry], bool]:
        query: Doc = {}
        if queue_id:
            query["queue_id"] = queue_id
        if after is not None:
            query["_id"] = {"$gt": _key(*after)}
        docs = await self._entries.find(query).sort("_id", ASCENDING).limit(limit + 1).to_list(None)
        return [_entry(d) for d in docs[:limit]], len(docs) > limit

    async def _stats(self, now: int) -> QueueStats:
        total = await self._entries.count_documents({})
        if not total:
            return QueueStats(0, 0, 0, 0)
        due = await self._entries.count_documents({"ready_at": {"$lte": now}})
        leased = await self._entries.count_documents({"lease_until": {"$gt": now}})
        oldest = await self._entries.find_one({}, {"created_at": 1}, sort=[("created_at", 1)])
        return QueueStats(total, due, leased, int(oldest["created_at"]) if oldest else 0)

    # -- maildrop locks ----------------------------------------------------------------------

    async def _top(self, user: str) -> Doc | None:
        return await self._locks.find_one({"user": user}, sort=[("gen", DESCENDING)])

    @staticmethod
    def _holds(doc: Doc | None, now: int) -> bool:
        return doc is not None and not doc["released"] and int(doc["until"]) > now

    def _refused(self, doc: Doc | None, now: int) -> LockState:
        if doc is None or not self._holds(doc, now):
            return LockState(False, "", 0)
        return LockState(False, doc["owner"], int(doc["until"]))

    async def _acquire_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState:
        for _ in range(LOCK_RETRIES):
            top = await self._top(user)
            if self._holds(top, now):
                assert top is not None
                if top["owner"] == who:
                    return await self._renew_lock(user, who, lease_ms, now)
                return self._refused(top, now)
            # Free (also when it was ours and expired: then we compete like anyone else, since
            # renewing an expired lock loses against a concurrent taker).
            gen = (int(top["gen"]) if top else 0) + 1
            mine: Doc = {
                "_id": _lock_id(user, gen), "user": user, "gen": gen, "owner": who,
                "until": now + lease_ms, "released": False,
            }  # fmt: skip
            try:
                await self._locks.insert_one(mine)
            except DuplicateKeyError:
                continue  # another session took this generation: look again
            # Verify after inserting: the previous holder did not renew in between (it writes,
            # then looks for us), and no stale taker put a generation above ours.
            prev = await self._locks.find_one({"_id": _lock_id(user, gen - 1)})
            newest = await self._top(user)
            if self._holds(prev, now) or newest is None or newest["_id"] != mine["_id"]:
                await self._locks.delete_one({"_id": mine["_id"]})
                return self._refused(prev if self._holds(prev, now) else newest, now)
            await self._locks.delete_many({"user": user, "gen": {"$lt": gen - 1}})
            return LockState(True, who, now + lease_ms)
        raise Unavailable("maildrop lock is contended; retry")

    async def _renew_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState:
        top = await self._top(user)
        if top is None or top["owner"] != who or top["released"]:
            return self._refused(top, now)
        await self._locks.update_one(
            {"_id": top["_id"], "owner": who}, {"$set": {"until": now + lease_ms}}
        )
        successor = await self._locks.find_one({"_id": _lock_id(user, int(top["gen"]) + 1)})
        if successor is not None:  # taken after it had expired
            return self._refused(successor, now)
        return LockState(True, who, now + lease_ms)

    async def _release_lock(self, user: str, who: str) -> bool:
        top = await self._top(user)
        if top is None or top["owner"] != who or top["released"]:
            return False
        await self._locks.update_one(
            {"_id": top["_id"], "owner": who}, {"$set": {"released": True}}
        )
        return True

    # -- janitor (postmesh.store.leftovers) --------------------------------------------------

    @property
    def kinds(self) -> tuple[str, ...]:
        return (lo.TRANSITIONS,)

    async def collect(self, kind: str, cutoffs: Cutoffs, limit: int) -> int:
        if kind != lo.TRANSITIONS:
            raise ValueError(f"unknown leftover kind {kind!r}")
        return await self._collect_transitions(int(cutoffs.orphans * 1000), limit)

    async def census(self) -> dict[str, int]:
        return {
            "queue_entries": await self._entries.count_documents({}),
            "transitions": await self._transitions.count_documents({}),
        }

    async def _collect_transitions(self, before_ms: int, limit: int) -> int:
        """Transitions of an incarnation whose entry is gone (a DELETE applied without its
        cleanup, a claimer that died after inserting into a deleted entry). An incarnation
        never comes back (Enqueue makes a new one, ``_apply`` never upserts), so nothing reads
        them again; a slow claimer that re-inserts one still checks the entry and removes it.
        Transitions of a live entry are kept: each generation's unique insert is what makes
        its change exclusive. Swept by _id, a bounded number per call."""
        query: Doc = {"at": {"$lt": before_ms}}
        if self._sweep_from is not None:
            query["_id"] = {"$gt": self._sweep_from}
        scan = limit * 4
        docs = await (
            self._transitions.find(query, {"entry": 1, "inc": 1})
            .sort("_id", ASCENDING)
            .limit(scan)
            .to_list(None)
        )
        self._sweep_from = docs[-1]["_id"] if len(docs) == scan else None
        if not docs:
            return 0
        live = {
            (e["_id"], e["inc"])
            for e in await self._entries.find(
                {"_id": {"$in": list({d["entry"] for d in docs})}}, {"inc": 1}
            ).to_list(None)
        }
        dead = [d["_id"] for d in docs if (d["entry"], d["inc"]) not in live]
        if dead:
            await self._transitions.delete_many({"_id": {"$in": dead}})
        return len(dead)
