"""Content-addressed, reference-counted blobs on the MongoDB API, without transactions.

Collections:
- ``blobs``:       {_id: sha256 hex, size, state: writing|complete|deleting, key, ...}; a blob of
                   one chunk (up to 255 KiB: most messages) carries its bytes itself (``data``)
                   and is inserted complete, one document written and read instead of three
                   writes (blob, chunk, completion) and two reads.
- ``blob_chunks``: {blob: key, n, data}, unique (blob, n); ``key`` names one incarnation of a
                   blob, so a deleter of an old incarnation never removes a newer one's chunks.
- ``blob_refs``:   {_id: ref id, blob_id, kind: message|upload}; one document per reference.
- ``blob_index``:  {_id: blob id, meta, search, sent_day, wire_ready}: the parsed form of the
                   content (deterministic, so a copy left behind by a crashed deleter is still
                   right).

The reference count is the number of ``message`` refs. Counting documents instead of keeping a
counter makes every step idempotent (insert-if-absent and delete-by-id can be retried after a
crash at any point without drifting a count), which a counter can only give with transactions.

Taking a reference and deleting a blob race safely in the flag pattern (Dekker): a referrer
first inserts its ref and then reads the blob's state; a deleter first moves the blob to
``deleting`` and then counts refs, and reverts to ``complete`` if it finds one. One of the two
always sees the other, so a referenced blob is never deleted.

That needs each state change to be atomic. FerretDB 1.x applies an update or a conditional delete
by reading the document, deciding in its own process and writing back (ADR 37): two deleters of
one blob could both claim it, and one's delete of the ``deleting`` document could land after the
other had reverted it to ``complete`` for a new referrer, which then held a reference to nothing.
So every state change of a blob document in this process goes under a per-blob lock
(``_transitions``), as the store's other read-modify-writes go under its mailbox and user locks;
on MongoDB each is atomic anyway, and one store replica runs on FerretDB (ADR 37).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from postmesh.common.logging import get_logger, kv
from postmesh.store.blobs import BlobSource, chunk_count
from postmesh.store.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from postmesh.store.model import MessageIndex
from postmesh.store.mongodb.coalesce import InsertBatcher, UpdateBatcher, UpdateSlots
from postmesh.store.mongodb.locks import KeyedLocks

log = get_logger(__name__)

WRITING, COMPLETE, DELETING = "writing", "complete", "deleting"
MESSAGE, UPLOAD = "message", "upload"
# A blob left in "deleting" this long was abandoned by a crashed deleter.
STALE_DELETE_SECONDS = 30.0
# How long a referrer waits for a concurrent writer or deleter to finish.
WAIT_SECONDS = 10.0
# Chunks per insert_many: ~4 MiB per round trip, well below the 48 MB batch limit.
INSERT_BATCH = 16
# A blob document without the bytes a one-chunk blob carries.
NO_DATA = {"data": 0}

Doc = dict[str, Any]


class MongoBlobStore:
    def __init__(
        self,
        blobs: AsyncCollection[Doc],
        chunks: AsyncCollection[Doc],
        refs: AsyncCollection[Doc],
        index: AsyncCollection[Doc],
        update_slots: UpdateSlots | None = None,
    ) -> None:
        self.blobs, self.chunks, self.refs, self.index = blobs, chunks, refs, index
        # Held around each change of a blob document's state (module docstring); a leaf lock.
        self._transitions = KeyedLocks()
        # Every insert here is insert-if-absent, so concurrent ones share commands (ADR 45).
        self._blob_inserts = InsertBatcher(blobs)
        self._chunk_inserts = InsertBatcher(chunks)
        self._ref_inserts = InsertBatcher(refs)
        self._index_inserts = InsertBatcher(index)
        self._completions = UpdateBatcher(blobs, update_slots or UpdateSlots())

    async def create_indexes(self) -> None:
        await self.chunks.create_index([("blob", ASCENDING), ("n", ASCENDING)], unique=True)
        await self.refs.create_index([("blob_id", ASCENDING), ("kind", ASCENDING)])
        # The janitor's query for expired upload pins.
        await self.refs.create_index([("kind", ASCENDING), ("expires_at", ASCENDING)])

    async def get_index(self, blob_id: str) -> MessageIndex | None:
        doc = await self.index.find_one({"_id": blob_id})
        if doc is None:
            return None
        return MessageIndex(
            bytes(doc["meta"]),
            bytes(doc["search"]),
            doc.get("sent_day"),
            wire_ready=doc.get("wire_ready"),
        )

    async def put_index(self, blob_id: str, index: MessageIndex) -> None:
        """Insert if absent; call with a reference held, so the blob cannot be deleted
        meanwhile (the deleter removes the index before the blob document)."""
        doc: Doc = {
            "_id": blob_id, "meta": index.meta, "search": index.search,
            "sent_day": index.sent_day, "wire_ready": index.wire_ready,
        }  # fmt: skip
        # Already there: written by an earlier writer of the same content, with the same values.
        await self._index_inserts.insert(doc, len(index.meta) + len(index.search))

    async def find(self, blob_id: str) -> Doc | None:
        return await self.blobs.find_one({"_id": blob_id}, NO_DATA)

    async def acquire(
        self,
        ref_id: str,
        blob_id: str,
        source: BlobSource | None,
        *,
        kind: str = MESSAGE,
        expires_at: float | None = None,
    ) -> int:
        """Record reference ``ref_id`` to the blob and make sure the blob is complete; returns
        its size. With ``source`` the blob is written if missing; without, it must exist.
        Idempotent: retrying with the same ref id holds one reference."""
        ref: Doc = {"_id": ref_id, "blob_id": blob_id, "kind": kind, "created_at": time.time()}
        if expires_at is not None:
            ref["expires_at"] = expires_at
        # Already there: an earlier attempt (or a concurrent one) took it; one reference.
        await self._ref_inserts.insert(ref)
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            doc = await self._current(blob_id, source)
            if doc is None:
                await self.refs.delete_one({"_id": ref_id})
                raise InvalidArgument(f"unknown blob_id {blob_id}")
            state = doc["state"]
            if state == COMPLETE:
                return int(doc["size"])
            if state == WRITING and source is not None and source.chunks == 1:
                # Taken over from a deleter (below): the bytes go into the document itself.
                async with self._transitions.hold(blob_id):
                    await self.blobs.update_one(
                        {"_id": blob_id, "key": doc["key"], "state": WRITING},
                        {"$set": {"state": COMPLETE, "data": source.read_chunk(0)}},
                    )
                continue
            if state == WRITING and source is not None:
                await self._write_chunks(doc["key"], source)
                async with self._transitions.hold(blob_id):
                    completed = await self._completions.update_one(
                        {"_id": blob_id, "key": doc["key"], "state": WRITING},
                        {"$set": {"state": COMPLETE}},
                    )
                if completed:
                    # Complete now, and our reference came first: no deleter takes it.
                    return source.size
                # Not matched (another writer completed it), or not known: read the state.
                continue
            if (
                state == DELETING
                and source is not None
                and time.time() - float(doc.get("deleting_at", 0)) > STALE_DELETE_SECONDS
            ):
                # The deleter died half-way; its chunks may be partly gone. Finish removing
                # them (nothing else ever removes an abandoned key's chunks), then start a new
                # incarnation (new key) and write it ourselves.
                log.warning("taking over abandoned blob deletion", extra=kv(blob_id=blob_id))
                async with self._transitions.hold(blob_id):
                    await self.chunks.delete_many({"blob": doc["key"]})
                    await self.blobs.update_one(
                        {"_id": blob_id, "key": doc["key"], "state": DELETING},
                        {"$set": {"state": WRITING, "key": _new_key(blob_id)}},
                    )
                continue
            if time.monotonic() > deadline:
                if source is None:
                    await self.refs.delete_one({"_id": ref_id})
                raise Unavailable(f"blob {blob_id} is busy ({state}); retry")
            # Another writer is writing it, or a deleter will revert or finish: wait.
            await asyncio.sleep(0.05)

    async def _current(self, blob_id: str, source: BlobSource | None) -> Doc | None:
        if source is None:
            return await self.blobs.find_one({"_id": blob_id}, NO_DATA)
        inline = source.chunks == 1
        for _ in range(5):
            new: Doc = {
                "_id": blob_id,
                "size": source.size,
                "state": COMPLETE if inline else WRITING,
                "key": _new_key(blob_id),
                "created_at": time.time(),
            }
            if inline:
                new["data"] = source.read_chunk(0)
            if await self._blob_inserts.insert(new, source.size if inline else 0):
                return new
            found = await self.blobs.find_one({"_id": blob_id}, NO_DATA)
            if found is not None:
                return found
            # Deleted between our insert and the read (its last reference went): insert again.
        raise Unavailable(f"blob {blob_id} is contended; retry")

    async def _write_chunks(self, key: str, source: BlobSource) -> None:
        # Chunk n of a blob is always the same bytes, so a duplicate means "already written"
        # (by an earlier attempt or a concurrent writer of the same content).
        for first in range(0, source.chunks, INSERT_BATCH):
            batch: list[Doc] = [
                {
                    "_id": _chunk_id(key, n),
                    "blob": key,
                    "n": n,
                    "data": (
                        source.read_chunk(n)
                        if source.in_memory
                        else await asyncio.to_thread(source.read_chunk, n)
                    ),
                }
                for n in range(first, min(first + INSERT_BATCH, source.chunks))
            ]
            # Sent with the chunks of other blobs being written at the same time.
            await asyncio.gather(*(self._chunk_inserts.insert(c, len(c["data"])) for c in batch))

    async def release(self, ref_id: str, blob_id: str) -> None:
        """Drop a reference (idempotent) and delete the blob if nothing references it."""
        await self.refs.delete_one({"_id": ref_id})
        await self.delete_if_unreferenced(blob_id)

    async def delete_if_unreferenced(self, blob_id: str, state: str = COMPLETE) -> bool:
        """Delete the blob if it is in ``state`` and nothing references it. ``WRITING``: the
        janitor's, for a blob whose writer died (no reference left, long untouched)."""
        if await self.refs.find_one({"blob_id": blob_id}) is not None:
            return False
        async with self._transitions.hold(blob_id):
            return await self._claim_and_delete(blob_id, state)

    async def _claim_and_delete(self, blob_id: str, state: str) -> bool:
        """Under the blob's lock: claim it (``deleting``), count references again, then remove
        it or give it back."""
        doc = await self.blobs.find_one_and_update(
            {"_id": blob_id, "state": state},
            {"$set": {"state": DELETING, "deleting_at": time.time()}},
            # With a one-chunk blob's bytes: FerretDB 1.24 has no projection on findAndModify.
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return False
        if await self.refs.find_one({"blob_id": blob_id}) is not None:
            # A referrer came in between: it will see "deleting" and wait; give it back.
            await self.blobs.update_one(
                {"_id": blob_id, "key": doc["key"], "state": DELETING},
                {"$set": {"state": state}, "$unset": {"deleting_at": ""}},
            )
            return False
        await self._remove(doc)
        return True

    async def finish_abandoned_delete(self, doc: Doc) -> bool:
        """The janitor's end of a deletion whose deleter died (``deleting`` for longer than
        STALE_DELETE_SECONDS), when no reference appeared since; with one, a writer of the
        content takes the blob over (``acquire``) and a referrer without it gives up."""
        if float(doc.get("deleting_at", 0)) > time.time() - STALE_DELETE_SECONDS:
            return False
        # The count and the removal under the lock a writer's takeover of the deletion takes.
        async with self._transitions.hold(doc["_id"]):
            if await self.refs.find_one({"blob_id": doc["_id"]}) is not None:
                return False
            await self._remove(doc)
        return True

    async def _remove(self, doc: Doc) -> None:
        """Chunks, index, then the document (of this incarnation, still ``deleting``): a
        crash in between leaves a ``deleting`` document that is finished later."""
        await self.chunks.delete_many({"blob": doc["key"]})
        await self.index.delete_one({"_id": doc["_id"]})
        await self.blobs.delete_one({"_id": doc["_id"], "key": doc["key"], "state": DELETING})

    async def refcount(self, blob_id: str) -> int | None:
        if await self.blobs.find_one({"_id": blob_id}, {"_id": 1}) is None:
            return None
        return await self.refs.count_documents({"blob_id": blob_id, "kind": MESSAGE})

    async def read(self, blob_id: str, size: int | None = None) -> AsyncIterator[bytes]:
        """Chunks of a complete blob. ``size`` given: a message's blob, which must exist
        (DataLoss if not); None: any blob, NotFound if it is not stored."""
        doc = await self.blobs.find_one({"_id": blob_id})
        if doc is None or doc["state"] != COMPLETE:
            if size is None:
                raise NotFound(f"blob {blob_id} is not stored")
            raise DataLoss(f"blob {blob_id} is missing")
        if "data" in doc:
            return _inline(bytes(doc["data"]))
        return self._stream(doc["key"], blob_id, chunk_count(int(doc["size"])))

    async def _stream(self, key: str, blob_id: str, count: int) -> AsyncIterator[bytes]:
        # Chunks by _id, one at a time: a primary-key lookup on every server (FerretDB 1.24
        # pushes only _id filters down to SQLite and would scan the chunk collection otherwise),
        # and never more than one ~255 KiB chunk in memory.
        for n in range(count):
            chunk = await self.chunks.find_one({"_id": _chunk_id(key, n)})
            if chunk is None:
                if n == 0:
                    raise DataLoss(f"blob {blob_id} has no chunks")
                raise NotFound(f"blob {blob_id} was deleted while being read")
            yield bytes(chunk["data"])


async def _inline(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _chunk_id(key: str, n: int) -> str:
    return f"{key}:{n}"


def _new_key(blob_id: str) -> str:
    return f"{blob_id}-{uuid.uuid4().hex[:16]}"
