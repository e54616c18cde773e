"""Message operations on the MongoDB API: copy/move, flags, expunge, reads, search, changes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from postmesh.api.store.v1 import store_pb2
from postmesh.store import flag_listing
from postmesh.store.errors import DataLoss, NotFound, Unavailable
from postmesh.store.indexing import headers_of_document
from postmesh.store.model import (
    Changes,
    CopyResult,
    ExpungeResult,
    FlagListing,
    FlagsMode,
    FlagsResult,
    Message,
    Quota,
    SearchCandidate,
    SearchRows,
    StoredContent,
)
from postmesh.store.mongodb import search_filter, watermark
from postmesh.store.mongodb.base import Doc, first_recent_uid, key_of, to_message
from postmesh.store.mongodb.delivery import MongoDelivery
from postmesh.store.mongodb.intents import COPY
from postmesh.store.mongodb.locks import user_key
from postmesh.store.mongodb.reservations import BOUND
from postmesh.store.mongodb.snapshots import Row
from postmesh.store.search import HEADERS_VERSION, plan
from postmesh.store.validation import DELETED, apply_flags

# Optimistic retries of one message's flag update under concurrent writers.
FLAG_RETRIES = 20
# Documents per $in query.
BATCH = 500
# A request naming at most this many UIDs reads its messages one by one (``_live_by_uid``).
BY_UID = 8
# Messages a batched content read (``_read_messages``) has in flight.
READ_AHEAD = 8
_SUMMARY = {
    "uid": 1, "flags": 1, "size": 1, "internal_date": 1, "modseq": 1, "blob_id": 1,
    "sent_day": 1, "expunged": 1,
}  # fmt: skip


def _listed(mbox: Doc, after_uid: int) -> Doc:
    """The UIDs a listing may show: above ``after_uid``, below every one still being written
    (``watermark.py``), so a listing never shows a UID above one that appears later."""
    return {"$gt": after_uid, "$lt": watermark.visible(mbox, time.time())[0]}


class MongoMessages(MongoDelivery):
    # -- copy and move -----------------------------------------------------------------------

    async def _copy(
        self, user: str, mailbox: str, uids: list[int], destination: str, *, move: bool
    ) -> CopyResult:
        async with self._locks.hold(user_key(user)):
            await self._recover(user)
            src = await self._mailbox_doc(user, mailbox)
            dst = await self._mailbox_doc(user, destination)
            return await self._copy_docs(user, src, dst, uids, move=move)

    async def _copy_docs(
        self, user: str, src: Doc, dst: Doc, uids: list[int], *, move: bool
    ) -> CopyResult:
        """All or nothing through an intent (``intents.py``): the copies get deterministic ids
        (intent, source), so rolling forward after a crash never copies a message twice; a
        MOVE tombstones its sources only after every copy exists, so nothing is lost."""
        docs = await self._live_by_uid(src["_id"], uids, {"uid": 1, "size": 1})
        if not docs:
            return CopyResult(int(dst["uidvalidity"]))
        # A move within one user's mailboxes leaves usage as it is; a copy reserves what it
        # adds under the intent's id, dropped when the intent is finished (reservations.py).
        intent_id = uuid.uuid4().hex
        reserved = not move and await self._reserve_quota(
            user, intent_id, sum(int(d["size"]) for d in docs), len(docs)
        )
        docs.sort(key=lambda d: int(d["uid"]))
        intent = await self._start_intent(
            user, COPY, intent_id=intent_id, src=src["_id"], dst=dst["_id"],
            ids=[d["_id"] for d in docs], move=move, reserved=reserved,
        )  # fmt: skip
        mapping = await self._run_copy(intent)
        await self._finish_intent(intent)
        source_uids = [u for u in (int(d["uid"]) for d in docs) if u in mapping]
        dest_uids = [mapping[u] for u in source_uids]
        modseq = 0
        if dest_uids:
            copy = await self._messages.find_one(
                {"mailbox_id": dst["_id"], "uid": dest_uids[0]}, {"modseq": 1}
            )
            modseq = int(copy["modseq"]) if copy else 0
        return CopyResult(
            int(dst["uidvalidity"]), source_uids, dest_uids, modseq,
            source_uids if move else [], int(intent.get("source_modseq", 0)),
        )  # fmt: skip

    async def _run_copy(self, intent: Doc) -> dict[int, int]:
        """Returns source uid -> destination uid for every message copied (now or by an
        earlier attempt of the intent)."""
        src_id: ObjectId = intent["src"]
        dst_id: ObjectId = intent["dst"]
        ids: list[Any] = intent["ids"]
        copy_id = {sid: key_of(intent["_id"], str(sid)) for sid in ids}
        # By id as the server serves it from an index (by_id.py: on FerretDB 1.24 an $in
        # decodes every message of every user).
        sources = await self._messages_by_id.find(ids)
        copies = {
            c["_id"]: c for c in await self._messages_by_id.find(list(copy_id.values()), {"uid": 1})
        }
        sources.sort(key=lambda d: int(d["uid"]))
        # Marks named after the intent: a roll-forward clears those of the attempt that died.
        copy_token, source_token = f"c{intent['_id']}", f"s{intent['_id']}"
        async with self._mailbox_writes(src_id, dst_id):
            self._settle_later(dst_id, copy_token)
            self._settle_later(src_id, source_token)
            # A source expunged (by someone else) before its copy was made is not copied.
            todo = [d for d in sources if copy_id[d["_id"]] not in copies and not d["expunged"]]
            for n, doc in enumerate(todo, 1):
                await self.blobs.acquire(copy_id[doc["_id"]], doc["blob_id"], None)
                if n % 200 == 0:
                    await self._renew_intent(intent)
            if todo:
                first, modseq = await self._allocate(dst_id, len(todo), copy_token)
                for i, doc in enumerate(todo):
                    new = {
                        **doc, "_id": copy_id[doc["_id"]], "mailbox_id": dst_id,
                        "uid": first + i, "modseq": modseq, "expunged": False, "released": False,
                        BOUND: intent["_id"],  # counted by the intent's reservation until done
                    }  # fmt: skip
                    try:
                        await self._messages.insert_one(new)
                    except DuplicateKeyError:
                        raise Unavailable("concurrent copy of the same messages; retry") from None
                    copies[new["_id"]] = new
            if intent["move"]:
                await self._tombstone_sources(intent, src_id, sources, source_token)
        return {
            int(d["uid"]): int(copies[copy_id[d["_id"]]]["uid"])
            for d in sources
            if copy_id[d["_id"]] in copies
        }

    async def _tombstone_sources(
        self, intent: Doc, src_id: ObjectId, sources: list[Doc], token: str
    ) -> None:
        """MOVE's expunge of the sources (one MODSEQ, recorded in the intent so a roll-forward
        reuses it), then their references dropped."""
        modseq = int(intent.get("source_modseq", 0))
        if not modseq:
            modseq = (await self._allocate(src_id, 0, token))[1]
            await self._intents.update_one(
                {"_id": intent["_id"]}, {"$set": {"source_modseq": modseq}}
            )
            intent["source_modseq"] = modseq
        for doc in sources:
            await self._messages.update_one(
                {"_id": doc["_id"], "expunged": False},
                {"$set": {"expunged": True, "modseq": modseq, "expunged_at": time.time()}},
            )
        await self._release([d for d in sources if not d.get("released")])

    # -- flags and expunge -------------------------------------------------------------------

    async def _live_by_uid(
        self, mailbox_id: ObjectId, uids: list[int], projection: Doc | None = None
    ) -> list[Doc]:
        """The live messages of the mailbox with these UIDs, in no order. A few are read one
        by one: FerretDB 1.24 pushes equalities down (the mailbox_id and uid indexes,
        pg_indexes.py) but not $in, for which it decodes every message of the mailbox (~40 ms
        of its CPU for 300) to find a client's one message."""
        if len(uids) <= BY_UID:
            found = await asyncio.gather(
                *(
                    self._messages.find_one(
                        {"mailbox_id": mailbox_id, "uid": uid, "expunged": False}, projection
                    )
                    for uid in set(uids)
                )
            )
            return [d for d in found if d is not None]
        docs: list[Doc] = []
        for i in range(0, len(uids), BATCH):
            docs += await self._messages.find(
                {"mailbox_id": mailbox_id, "uid": {"$in": uids[i : i + BATCH]}, "expunged": False},
                projection,
            ).to_list(None)
        return docs

    async def _store_flags(
        self,
        user: str,
        mailbox: str,
        uids: list[int],
        mode: FlagsMode,
        flags: tuple[str, ...],
        unchanged_since: int,
    ) -> FlagsResult:
        mbox = await self._mailbox_doc(user, mailbox)
        async with self._mailbox_writes(mbox["_id"]):
            docs = await self._live_by_uid(mbox["_id"], uids)
            docs.sort(key=lambda d: int(d["uid"]))
            return await self._apply_flags(mbox, docs, mode, flags, unchanged_since)

    async def _apply_flags(
        self,
        mbox: Doc,
        docs: list[Doc],
        mode: FlagsMode,
        flags: tuple[str, ...],
        unchanged_since: int,
    ) -> FlagsResult:
        result = FlagsResult()
        modseq = 0
        for doc in docs:
            current: Doc | None = doc
            for _ in range(FLAG_RETRIES):
                assert current is not None
                if unchanged_since and int(current["modseq"]) > unchanged_since:
                    # RFC 7162 section 3.1.3: changed since the client looked; not touched.
                    result.modified.append(int(current["uid"]))
                    break
                new = apply_flags(current["flags"], mode, flags)
                if set(new) == set(current["flags"]):
                    result.messages.append(to_message(current))
                    break
                # RFC 7162 section 3.1: one MODSEQ for what one STORE changes, unless a
                # concurrent change got a later one in between (MODSEQ never goes back).
                if modseq <= int(current["modseq"]):
                    modseq = (await self._allocate(mbox["_id"], 0))[1]
                # Compare-and-set on the message's MODSEQ, which every change replaces.
                done = await self._messages.update_one(
                    {"_id": current["_id"], "modseq": current["modseq"], "expunged": False},
                    {"$set": {"flags": list(new), "modseq": modseq}},
                )
                if done.matched_count:
                    result.messages.append(to_message({**current, "flags": new, "modseq": modseq}))
                    result.changed.append(int(current["uid"]))
                    break
                current = await self._messages.find_one({"_id": current["_id"]})
                if current is None or current["expunged"]:
                    break
            else:
                raise Unavailable(f"uid {doc['uid']} is being changed concurrently; retry")
        return result

    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult:
        """Tombstone (expunged=true, invisible from then on) -> drop the blob reference ->
        released=true. A crash leaves a tombstone not yet released, which the next Expunge of
        the mailbox finishes; every step is idempotent."""
        mbox = await self._mailbox_doc(user, mailbox)
        async with self._mailbox_writes(mbox["_id"]):
            query: Doc = {"mailbox_id": mbox["_id"], "flags": DELETED, "expunged": False}
            if uids is not None:
                query["uid"] = {"$in": uids}
            candidates = await self._messages.find(query, {"uid": 1, "blob_id": 1}).to_list(None)
            leftovers = await self._messages.find(
                {"mailbox_id": mbox["_id"], "expunged": True, "released": False},
                {"uid": 1, "blob_id": 1},
            ).to_list(None)
            if not candidates and not leftovers:
                return ExpungeResult()
            modseq = 0
            mine: list[Doc] = []
            if candidates:
                modseq = (await self._allocate(mbox["_id"], 0))[1]
                for doc in candidates:
                    r = await self._messages.update_one(
                        {"_id": doc["_id"], "expunged": False, "flags": DELETED},
                        {"$set": {"expunged": True, "modseq": modseq, "expunged_at": time.time()}},
                    )
                    if r.modified_count:  # else: a concurrent Expunge owns it, or \Deleted went
                        mine.append(doc)
            await self._release([*mine, *leftovers])
            expunged = sorted({int(d["uid"]) for d in [*mine, *leftovers]})
            return ExpungeResult(expunged, modseq or int(mbox["highestmodseq"]))

    # -- reads -------------------------------------------------------------------------------

    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        mbox = await self._mailbox_doc(user, mailbox)
        # From the mailbox's snapshot (snapshots.py), below every UID still being written.
        below = _listed(mbox, after_uid)["$lt"]
        found = (await self._snapshots.current(mbox)).summaries(after_uid, below)
        return found[:limit], len(found) > limit

    async def _list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagListing:
        mbox = await self._mailbox_doc(user, mailbox)
        # From the mailbox's snapshot (snapshots.py), below every UID still being written.
        below = _listed(mbox, after_uid)["$lt"]
        rows = (await self._snapshots.current(mbox)).listing(after_uid, below)
        return flag_listing.fold(rows[: limit + 1], limit, tuple)

    async def _read_content(self, user: str, mailbox: str, uid: int) -> StoredContent:
        mbox = await self._mailbox_doc(user, mailbox)
        rows = self._snapshots.live_rows(mbox, (uid,)) or {}
        return await self._content_of(mbox, mailbox, uid, rows.get(uid))

    async def _read_messages(
        self, user: str, mailbox: str, uids: list[int]
    ) -> AsyncIterator[tuple[int, StoredContent | None]]:
        # GetMessageContents (a POP3 download, an IMAP FETCH of several bodies): the mailbox
        # read once, and READ_AHEAD messages in flight, each one or two queries, instead of
        # one message's queries after the other's. Each holds at most one chunk.
        try:
            mbox = await self._mailbox_doc(user, mailbox)
        except NotFound:
            for uid in uids:
                yield uid, None
            return
        rows = self._snapshots.live_rows(mbox, uids) or {}

        async def one(uid: int) -> StoredContent | None:
            try:
                return await self._content_of(mbox, mailbox, uid, rows.get(uid))
            except NotFound:
                return None

        pending: collections.deque[tuple[int, asyncio.Task[StoredContent | None]]]
        pending = collections.deque()
        try:
            for uid in uids:
                pending.append((uid, asyncio.ensure_future(one(uid))))
                if len(pending) >= READ_AHEAD:
                    first, task = pending.popleft()
                    yield first, await task
            while pending:
                first, task = pending.popleft()
                yield first, await task
        finally:  # the caller stopped early (its client went away) or a read failed
            for _, task in pending:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: nobody will ask for it
                task.cancel()

    async def _content_of(
        self, mbox: Doc, mailbox: str, uid: int, row: Row | None
    ) -> StoredContent:
        """Message ``uid``'s content; ``row``: its row in the mailbox's exact snapshot, if
        there. From the row, its blob straight away: one query instead of two (ADR 0081). A
        blob gone meanwhile (the message expunged and its content deleted since ``mbox`` was
        read) is asked again by UID, which tells a message gone (NotFound) from a content
        lost (DataLoss)."""
        if row is not None:
            with contextlib.suppress(DataLoss):
                return StoredContent(await self.blobs.read(row[4], row[2]), row[5])
        doc = await self._messages.find_one(
            {"mailbox_id": mbox["_id"], "uid": uid, "expunged": False}
        )
        if doc is None:
            raise NotFound(f"no message with uid {uid} in {mailbox!r}")
        chunks = await self.blobs.read(doc["blob_id"], int(doc["size"]))
        # Absent from a message stored before it was recorded (ADR 0042): not known.
        return StoredContent(chunks, doc.get("wire_ready"))

    async def _index_fields(self, blob_ids: set[str], field: str) -> dict[str, bytes]:
        # By id as the server serves it from an index (by_id.py: $in is not on FerretDB).
        docs = await self._index_by_id.find(sorted(blob_ids), {field: 1})
        return {doc["_id"]: bytes(doc[field]) for doc in docs}

    async def _get_meta(
        self, user: str, mailbox: str, uids: list[int]
    ) -> list[tuple[int, str, bytes | None]]:
        mbox = await self._mailbox_doc(user, mailbox)
        # From the mailbox's kept snapshot when it is exact and has them all (ADR 0081): no
        # message read at all, where a query for more than a few UIDs ($in) makes FerretDB
        # 1.24 decode every message of the mailbox.
        rows = self._snapshots.live_rows(mbox, uids)
        if rows is not None and len(rows) == len(uids):  # uids: ascending, distinct
            blob_ids = [(uid, row[4]) for uid, row in rows.items()]
        else:
            docs = await self._live_by_uid(mbox["_id"], uids, {"uid": 1, "blob_id": 1})
            blob_ids = [(int(d["uid"]), d["blob_id"]) for d in docs]
        metas = await self._index_fields({b for _, b in blob_ids}, "meta")
        return sorted((uid, b, metas.get(b)) for uid, b in blob_ids)

    async def _search(self, user: str, mailbox: str, criteria: store_pb2.SearchKey) -> SearchRows:
        mbox = await self._mailbox_doc(user, mailbox)
        live: Doc = {"mailbox_id": mbox["_id"], "expunged": False}
        top = await self._messages.find_one(live, {"uid": 1}, sort=[("uid", DESCENDING)])
        max_uid = int(top["uid"]) if top else 0
        p = plan(criteria, max_uid, search_filter.LIMITS)
        cond = search_filter.to_filter(p.pushed)
        if p.uses_headers:
            # Documents from before header indexing come back whatever the header
            # conditions say, for the evaluator.
            cond = {"$or": [cond, {"shv": {"$ne": HEADERS_VERSION}}]}
        query = {**live, "$and": [cond]} if cond else live
        if p.residual is None and not p.uses_headers:
            docs = await self._messages.find(query, {"uid": 1, "modseq": 1}).to_list(None)
            hits = sorted((int(d["uid"]), int(d["modseq"])) for d in docs)
            return SearchRows(hits, None, [], [], max_uid)
        docs = await self._messages.find(query, {**_SUMMARY, "shv": 1}).to_list(None)
        docs.sort(key=lambda d: int(d["uid"]))
        out = SearchRows([], p.residual, [], [], max_uid)
        stale = [d for d in docs if p.uses_headers and d.get("shv") != HEADERS_VERSION]
        wanted = {d["blob_id"] for d in stale}
        if p.residual_needs_document:
            wanted |= {d["blob_id"] for d in docs}
        searches = await self._index_fields(wanted, "search") if wanted else {}
        await self._index_headers(stale, searches)
        stale_ids = {d["_id"] for d in stale}
        for d in docs:
            cand = SearchCandidate(to_message(d), d.get("sent_day"), searches.get(d["blob_id"]))
            if d["_id"] in stale_ids:
                out.unindexed.append(cand)
            elif p.residual is None:
                out.hits.append((cand.message.uid, cand.message.modseq))
            else:
                out.candidates.append(cand)
        return out

    async def _index_headers(self, docs: list[Doc], searches: dict[str, bytes]) -> None:
        """Give messages stored before header indexing their ``sh`` fields, so the next search
        matches them in the query (a content not indexed at all is parsed by the caller, and
        its messages here the time after)."""
        for d in docs:
            data = searches.get(d["blob_id"])
            fields = search_filter.header_fields(headers_of_document(data)) if data else {}
            if fields:
                await self._messages.update_one({"_id": d["_id"]}, {"$set": fields})

    async def _get_changes(self, user: str, mailbox: str, since: int) -> Changes:
        mbox = await self._mailbox_doc(user, mailbox)
        # Up to the watermark only: what lies above it comes with the next call (watermark.py).
        highest = watermark.visible(mbox, time.time())[1]
        # FerretDB 1.24 pushes no range down: the MODSEQ query below decodes every message of
        # the mailbox (~40 ms of its CPU for 300). So it is made only when needed: not when
        # nothing visible changed (a NOOP's or IDLE's poll), nor when the mailbox's snapshot
        # saw only new messages come since ``since`` (a delivery announced to IDLE).
        new = [] if since >= highest else (await self._snapshots.current(mbox)).changes_since(since)
        if new is not None:
            vanished_floor = int(mbox.get("vanished_floor", 0))
            return Changes(
                new, [], max(highest, since), int(mbox["uidvalidity"]),
                expunged_incomplete=since < vanished_floor,
                first_recent_uid=first_recent_uid(mbox),
            )  # fmt: skip
        docs = await self._messages.find(
            {"mailbox_id": mbox["_id"], "modseq": {"$gt": since, "$lte": highest}}, _SUMMARY
        ).to_list(None)
        docs.sort(key=lambda d: int(d["uid"]))
        # Read after the tombstones: the janitor raises the floor before it removes any
        # (mongodb/leftovers.py), so a tombstone missed above shows here as a higher floor.
        floor = await self._mailboxes.find_one({"_id": mbox["_id"]}, {"vanished_floor": 1})
        return Changes(
            [to_message(d) for d in docs if not d["expunged"]],
            [int(d["uid"]) for d in docs if d["expunged"]],
            max(highest, since), int(mbox["uidvalidity"]),
            expunged_incomplete=since < int((floor or {}).get("vanished_floor", 0)),
            first_recent_uid=first_recent_uid(mbox),
        )  # fmt: skip

    # -- blobs and quotas --------------------------------------------------------------------

    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        return await self.blobs.read(blob_id)

    async def _blob_refcount(self, blob_id: str) -> int | None:
        return await self.blobs.refcount(blob_id)

    async def _get_quota(self, user: str) -> Quota:
        return await self._quota(user)

    async def _set_quota(self, user: str, storage_bytes: int, messages: int) -> Quota:
        await self._require_user(user)
        await self._users.update_one(
            {"_id": user},
            {"$set": {"storage_limit": storage_bytes, "message_limit": messages}},
        )
        await self._touch_users()
        return await self._quota(user)
