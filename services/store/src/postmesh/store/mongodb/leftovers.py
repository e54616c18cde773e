"""The janitor's work on the MongoDB API (``postmesh.store.leftovers``), without transactions.

Every removal reuses the protocol of the code that made the leftover, so it is safe against live
writers and other replicas: blobs go only through ``MongoBlobStore.delete_if_unreferenced``
(mark ``deleting``, re-count references, give back if one appeared), intents only through
``_recover`` (lease takeover, then the same roll-forward a user's next operation runs), and a
mailbox document is only updated under its in-process lock (FerretDB 1.24 updates are not atomic,
ADR 7). Tombstones: the mailbox's ``vanished_floor`` is raised *before* they are deleted, and
GetChanges reads the floor *after* the tombstones, so a reader that missed one sees the floor.

Sweeps (blobs, chunks, Append references) walk their collection by ``_id`` from where the
previous call stopped, a bounded number of documents per call, and start over at the end.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from bson import ObjectId

from postmesh.store import leftovers as lo
from postmesh.store.leftovers import Cutoffs, Leftovers
from postmesh.store.mongodb.base import Doc
from postmesh.store.mongodb.blobs import COMPLETE, DELETING, MESSAGE, UPLOAD, WRITING
from postmesh.store.mongodb.delivery import DONE
from postmesh.store.mongodb.locks import user_key
from postmesh.store.mongodb.messages import MongoMessages

# A sweep looks at up to this many documents per removable item it may return.
SCAN_FACTOR = 4
# Append takes a reference with a fresh uuid4().hex as the message's _id (32 hex digits);
# Deliver (its delivery key) and COPY (from the intent) use sha256 hex ids (64), uploads
# "upload-...". Only an Append's reference can outlive its writer with nothing to finish it:
# a Deliver's goes with its delivery record, a COPY's is completed by its intent.
APPEND_REF_LENGTH = 32


class MongoLeftovers(MongoMessages, Leftovers):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sweep_from: dict[str, Any] = {}

    @property
    def kinds(self) -> tuple[str, ...]:
        # What frees references first; blobs and their chunks last.
        return (
            lo.INTENTS, lo.UPLOAD_PINS, lo.DELIVERIES, lo.REFERENCES, lo.TOMBSTONES,
            lo.BLOBS, lo.CHUNKS, lo.RESERVATIONS,
        )  # fmt: skip

    async def collect(self, kind: str, cutoffs: Cutoffs, limit: int) -> int:
        if kind == lo.INTENTS:
            return await self._collect_intents(limit)
        if kind == lo.UPLOAD_PINS:
            return await self._collect_upload_pins(cutoffs.now, limit)
        if kind == lo.DELIVERIES:
            return await self._collect_deliveries(cutoffs.deliveries, limit)
        if kind == lo.REFERENCES:
            return await self._collect_append_refs(cutoffs.orphans, limit)
        if kind == lo.TOMBSTONES:
            return await self._collect_tombstones(cutoffs.now, cutoffs.tombstones, limit)
        if kind == lo.BLOBS:
            return await self._collect_blobs(cutoffs.orphans, limit)
        if kind == lo.CHUNKS:
            return await self._collect_chunks(limit)
        if kind == lo.RESERVATIONS:
            return await self._quota_gate.collect(cutoffs.now, limit)
        raise ValueError(f"unknown leftover kind {kind!r}")

    async def census(self) -> dict[str, int]:
        count = {
            "blobs": self.blobs.blobs, "chunks": self.blobs.chunks, "indexes": self.blobs.index,
            "references": self.blobs.refs, "deliveries": self._deliveries,
            "delivered": self._delivered, "intents": self._intents,
        }  # fmt: skip
        out = {name: await coll.count_documents({}) for name, coll in count.items()}
        out["messages"] = await self._messages.count_documents({"expunged": False})
        out["tombstones"] = await self._messages.count_documents({"expunged": True})
        return out

    async def _collect_intents(self, limit: int) -> int:
        """Expired intents rolled forward, user by user under the user lock, as the user's
        next operation would (``_recover``)."""
        expired = await (
            self._intents.find({"lease_until": {"$lt": time.time()}}, {"user": 1})
            .limit(limit)
            .to_list(None)
        )
        done = 0
        for user in dict.fromkeys(d["user"] for d in expired):
            async with self._locks.hold(user_key(user)):
                done += await self._recover(user)
        return done

    async def _collect_upload_pins(self, now: float, limit: int) -> int:
        pins = await (
            self.blobs.refs.find({"kind": UPLOAD, "expires_at": {"$lt": now}}, {"blob_id": 1})
            .limit(limit)
            .to_list(None)
        )
        for pin in pins:
            await self.blobs.release(pin["_id"], pin["blob_id"])
        return len(pins)

    async def _collect_deliveries(self, before: float, limit: int) -> int:
        """Records older than the retention. One still ``pending`` is a delivery that was never
        retried: its blob reference (same id) goes too, unless its message exists (a crash
        before "done"; the reference is then the message's)."""
        docs = await (
            self._deliveries.find({"created_at": {"$lt": before}}, {"state": 1, "blob_id": 1})
            .limit(limit)
            .to_list(None)
        )
        for doc in docs:
            if doc.get("state") != DONE and not await self._messages.find_one(
                {"_id": doc["_id"]}, {"_id": 1}
            ):
                # Not done, or done and its message gone since (with its reference): either
                # way the reference of this id is not a message's.
                await self.blobs.release(doc["_id"], doc["blob_id"])
            # Its outcome first: a crash in between leaves a record, found again next pass.
            await self._delivered.delete_one({"_id": doc["_id"]})
            await self._deliveries.delete_one({"_id": doc["_id"]})
        return len(docs)

    async def _collect_append_refs(self, before: float, limit: int) -> int:
        """References of an Append that died before inserting its message."""
        refs = await self._sweep(
            lo.REFERENCES, self.blobs.refs, {"kind": MESSAGE, "created_at": {"$lt": before}},
            {"blob_id": 1}, limit,
        )  # fmt: skip
        candidates = [r for r in refs if len(str(r["_id"])) == APPEND_REF_LENGTH]
        if not candidates:
            return 0
        present = {
            d["_id"]
            for d in await self._messages.find(
                {"_id": {"$in": [r["_id"] for r in candidates]}}, {"_id": 1}
            ).to_list(None)
        }
        removed = 0
        for ref in candidates:
            if ref["_id"] not in present:
                await self.blobs.release(ref["_id"], ref["blob_id"])
                removed += 1
        return removed

    async def _collect_tombstones(self, now: float, before: float, limit: int) -> int:
        # Tombstones from before expunged_at existed start their retention now.
        legacy = await (
            self._messages.find({"expunged": True, "expunged_at": {"$exists": False}}, {"_id": 1})
            .limit(limit)
            .to_list(None)
        )
        if legacy:
            await self._messages.update_many(
                {"_id": {"$in": [d["_id"] for d in legacy]}}, {"$set": {"expunged_at": now}}
            )
        docs = await (
            self._messages.find(
                {"expunged": True, "expunged_at": {"$lt": before}},
                {"mailbox_id": 1, "modseq": 1, "blob_id": 1, "released": 1},
            )
            .sort("expunged_at", 1)
            .limit(limit)
            .to_list(None)
        )
        by_mailbox: dict[ObjectId, list[Doc]] = defaultdict(list)
        for doc in docs:
            by_mailbox[doc["mailbox_id"]].append(doc)
        for mailbox_id, group in by_mailbox.items():
            async with self._mailbox_writes(mailbox_id):
                # A tombstone an Expunge left unreleased (it crashed) is released first.
                await self._release([d for d in group if not d.get("released")])
                floor = max(int(d["modseq"]) for d in group)
                await self._mailboxes.update_one(
                    {"_id": mailbox_id}, {"$max": {"vanished_floor": floor}}
                )
                await self._messages.delete_many(
                    {"_id": {"$in": [d["_id"] for d in group]}, "expunged": True}
                )
        return len(docs)

    async def _collect_blobs(self, before: float, limit: int) -> int:
        """Blobs nothing references: complete ones (their last reference went without
        deleting them, e.g. a release that crashed), ones left ``writing`` by a dead writer,
        and ones left ``deleting`` by a dead deleter."""
        docs = await self._sweep(
            lo.BLOBS, self.blobs.blobs, {}, {"state": 1, "key": 1, "created_at": 1,
                                              "deleting_at": 1}, limit,
        )  # fmt: skip
        if not docs:
            return 0
        held = {
            r["blob_id"]
            for r in await self.blobs.refs.find(
                {"blob_id": {"$in": [d["_id"] for d in docs]}}, {"blob_id": 1}
            ).to_list(None)
        }
        removed = 0
        for doc in docs:
            if doc["_id"] in held:
                continue
            state = doc.get("state")
            if state == COMPLETE or (state == WRITING and float(doc.get("created_at", 0)) < before):
                removed += await self.blobs.delete_if_unreferenced(doc["_id"], state)
            elif state == DELETING:
                removed += await self.blobs.finish_abandoned_delete(doc)
        return removed

    async def _collect_chunks(self, limit: int) -> int:
        """Chunks of a blob incarnation (``key``) whose document is gone: left by a deleter
        that died before this version finished such deletions. Keys are never reused, so
        chunks of a key without its document can only be garbage. One key per step, from
        the (blob, n) index."""
        start = self._sweep_from.get(lo.CHUNKS, "")
        removed = 0
        for _ in range(limit * SCAN_FACTOR):
            nxt = await self.blobs.chunks.find_one(
                {"blob": {"$gt": start}}, {"blob": 1, "_id": 0}, sort=[("blob", 1)]
            )
            if nxt is None:
                start = ""
                break
            start = key = str(nxt["blob"])
            blob_id = key.rsplit("-", 1)[0]
            if await self.blobs.blobs.find_one({"_id": blob_id, "key": key}, {"_id": 1}):
                continue
            await self.blobs.chunks.delete_many({"blob": key})
            removed += 1
            if removed >= limit:
                break
        self._sweep_from[lo.CHUNKS] = start
        return removed

    async def _sweep(self, name: str, coll: Any, query: Doc, fields: Doc, limit: int) -> list[Doc]:
        """The next ``limit * SCAN_FACTOR`` documents matching ``query`` by ``_id`` after where
        the previous call stopped (from the start again after the end)."""
        after = self._sweep_from.get(name)
        q = query if after is None else {**query, "_id": {"$gt": after}}
        docs: list[Doc] = await (
            coll.find(q, fields).sort("_id", 1).limit(limit * SCAN_FACTOR).to_list(None)
        )
        self._sweep_from[name] = docs[-1]["_id"] if len(docs) == limit * SCAN_FACTOR else None
        return docs
