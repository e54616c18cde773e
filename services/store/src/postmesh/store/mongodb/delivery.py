"""Deliver and Append on the MongoDB API.

Without multi-document transactions, Deliver is a sequence of single-document writes, each
idempotent, recorded in a delivery document so a retry after a crash at any point resumes
where the first attempt stopped (see ``_deliver``). UIDs and MODSEQs come from ``$inc`` on the
mailbox document under the mailbox lock, as WildDuck does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from bson import ObjectId
from pymongo.errors import BulkWriteError

from postmesh.store.blobs import BlobSource
from postmesh.store.errors import (
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    StoreError,
    Unavailable,
)
from postmesh.store.indexing import search_headers
from postmesh.store.model import AppendResult, DeliverResult, Delivery, MessageIndex
from postmesh.store.mongodb import search_filter
from postmesh.store.mongodb.base import Doc, key_of
from postmesh.store.mongodb.blobs import DELETING, UPLOAD
from postmesh.store.mongodb.grouping import Waiter
from postmesh.store.mongodb.locks import user_key
from postmesh.store.mongodb.mailboxes import MongoMailboxes

PENDING, DONE = "pending", "done"


def delivery_key(queue_id: str, user: str, mailbox: str) -> str:
    """Deterministic _id of a delivery (and of the message it makes)."""
    return key_of(queue_id, user, mailbox)


def delivery_mark(delivery_id: str) -> str:
    """The pending mark of a delivery's allocation, named after it so that a retry can clear
    the mark of an attempt that died (watermark.py)."""
    return "d" + delivery_id


class Redelivered(Exception):
    """A delivery's record was there already: not a first attempt (``_deliver``)."""


@dataclass(eq=False)
class Pending:
    """A delivery queued for its mailbox's writer: its record, the content (None: the blob is
    stored already) and its parsed index; ``admitted`` once its record is inserted (by this
    attempt), ``referenced`` once its blob step is done."""

    record: Doc
    source: BlobSource | None
    index: MessageIndex
    admitted: bool = False
    referenced: bool = False


class MongoDelivery(MongoMailboxes):
    async def _deliver(
        self, delivery: Delivery, source: BlobSource | None, index: MessageIndex | None
    ) -> DeliverResult:
        """Steps, each idempotent, so a retry resumes after a crash anywhere:

        0. a user never seen is provisioned first (idempotent, see ``_provision``);
        1. insert the delivery document {_id: key, state: pending} (unique _id: the first
           attempt wins; a retry reads it back, and returns at once if it is done). Not read
           first: a first attempt, by far the most common, learns it is one from the insert,
           one command instead of two. Then, under a limit, the message's usage is reserved
           under the delivery key (``reservations.py``) and the reservation dropped after
           step 3; a first attempt refused by its quota deletes its record again. Without a
           limit, the record is inserted by the mailbox's writer with step 2a, together with
           the records of its group (a redelivery is handed back to take this step's path);
        2. if the message document does not exist yet (looked up only by a retry: a first
           attempt cannot have written it):
           a. by the mailbox's writer, together with the other deliveries queued for it
              (``grouping.py``): take the blob reference (ref _id = delivery key: held at
              most once) and store the parsed index with the blob;
           b. then under the mailbox lock: allocate UIDs and MODSEQs with one $inc, marked
              pending per delivery (a crash before the insert burns them, which RFC 9051
              allows);
           c. insert the messages with _id = delivery key (a duplicate means it exists), then
              clear the marks;
        3. record the delivery done with its UID (an outcome document, the group's in one
           command).
        """
        assert delivery.blob_id is not None
        blob_id = delivery.blob_id
        did = delivery_key(delivery.queue_id, delivery.user, delivery.mailbox)
        try:
            record, user_doc, created_mailboxes = await self._prepare(delivery, source, index)
        except StoreError:
            # A redelivery of a done delivery answers as before, even when its blob, mailbox
            # or user has gone since (the record outlives them).
            earlier = await self._with_outcome(await self._deliveries.find_one({"_id": did}))
            if earlier is not None and earlier["state"] == DONE:
                return self._result(earlier, duplicate=True, created=False)
            raise
        assert index is not None  # _prepare refuses a delivery without one
        pending = Pending(record, source, index)
        # A content of several chunks takes its blob step itself (below), so that its chunk
        # writes never hold back a group of small messages.
        chunked = source is not None and source.chunks > 1
        if self._unlimited(user_doc) and not chunked:
            # No quota to reserve between the record and the blob step: the mailbox's writer
            # inserts the record with its group's (one command for the group, ADR 67), and
            # hands a redelivery back to take the path below.
            try:
                record, created = await self._write_current(pending)
            except Redelivered:
                duplicate = True
            else:
                return self._result(
                    record, duplicate=False, created=created, created_mailboxes=created_mailboxes
                )
        else:
            duplicate = not await self._delivery_inserts.insert(record)
            pending.admitted = True
        if duplicate:
            created_mailboxes = []
            found = await self._with_outcome(await self._deliveries.find_one({"_id": did}))
            if found is None:
                raise Unavailable("delivery record vanished; retry")
            record = found
            if record["state"] == DONE:
                return self._result(record, duplicate=True, created=False)
            if record["blob_id"] != blob_id:
                raise InvalidArgument(
                    f"queue id {delivery.queue_id} was delivered with other content"
                )
        # A first attempt (it inserted the record) finds no message of its own: the message's
        # _id is the delivery key, and only an attempt holding the record writes it.
        written = None
        if duplicate:
            written = await self._messages.find_one({"_id": did}, {"uid": 1, "modseq": 1})
        created = False
        reserved = False
        if written is None:
            # The message's usage, reserved under its delivery key before the message is
            # written (reservations.py): a retry reuses the reservation (or reserves again if
            # it lapsed).
            try:
                reserved = await self._reserve_quota(
                    delivery.user, did, record["size"], 1, None if duplicate else user_doc
                )
            except QuotaExceeded:
                if not duplicate:
                    # Refused before anything else of it was written: no trace of it is left
                    # (a crash in between leaves the pending record to the janitor).
                    await self._deliveries.delete_one({"_id": did, "state": PENDING})
                raise
            pending.record, pending.admitted = record, True
            if chunked:
                await self._step_reference_blob(pending)
            record, created = await self._write_current(pending)
        else:
            record = {**record, "uid": written["uid"], "modseq": written["modseq"]}
            # The attempt that wrote the message died before clearing its pending mark: cleared
            # under the mailbox lock like any other (FerretDB applies updates of one document
            # read-then-write, so an unlocked one could undo a concurrent allocation).
            async with self._mailbox_writes(record["mailbox_id"]):
                self._settle_later(record["mailbox_id"], delivery_mark(did))
            await self._step_mark_done([record])
        if reserved:  # the message exists and counts itself from now on
            await self._drop_reservation(did)
        return self._result(
            record, duplicate=duplicate, created=created, created_mailboxes=created_mailboxes
        )

    def _unlimited(self, user_doc: Doc | None) -> bool:
        """Whether a Deliver for the user, as its document was read, reserves no quota."""
        return bool(user_doc and user_doc.get("provisioned")) and not any(
            self._limits(user_doc or {})
        )

    async def _prepare(
        self, delivery: Delivery, source: BlobSource | None, index: MessageIndex | None
    ) -> tuple[Doc, Doc | None, list[str]]:
        """The delivery record to insert, the user document as read (None: read it again),
        and the mailboxes a first provisioning created."""
        assert delivery.blob_id is not None
        blob_id = delivery.blob_id
        # The reads the steps need, at once (independent round trips).
        user_doc, box = await asyncio.gather(
            self._delivery_user_doc(delivery.user),
            self._delivery_mailbox(delivery.user, delivery.mailbox),
        )
        if source is None:
            blob = await self.blobs.find(blob_id)
            if blob is None or blob["state"] == DELETING:
                raise InvalidArgument(f"unknown blob_id {blob_id}")
            size = int(blob["size"])
        else:
            size = source.size
        if index is None:
            raise Unavailable(f"blob {blob_id} was being stored while parsed; retry")
        created_mailboxes: list[str] = []
        if user_doc is None or not user_doc.get("provisioned"):
            async with self._locks.hold(user_key(delivery.user)):
                created_mailboxes = (
                    await self._provision_locked(delivery.user, listing=False)
                ).created
            user_doc = box = None  # read again
        # Missing or \Noselect: read again, to answer why.
        mbox = (
            box
            if box and not box.get("noselect")
            else await self._mailbox_doc(delivery.user, delivery.mailbox)
        )
        record: Doc = {
            "_id": delivery_key(delivery.queue_id, delivery.user, delivery.mailbox),
            "queue_id": delivery.queue_id, "user": delivery.user,
            "mailbox": delivery.mailbox, "mailbox_id": mbox["_id"],
            "uidvalidity": mbox["uidvalidity"], "blob_id": blob_id, "size": size,
            "flags": list(delivery.flags), "internal_date": delivery.internal_date,
            "sent_day": index.sent_day, "wire_ready": index.wire_ready, "state": PENDING,
            "created_at": time.time(),
            **search_filter.header_fields(search_headers(index)),
        }  # fmt: skip
        return record, user_doc, created_mailboxes

    async def _write_current(self, pending: Pending) -> tuple[Doc, bool]:
        """:meth:`_write_grouped`, once more if the mailbox the record names was refused (read
        before a rename, a DELETE or a \\Noselect elsewhere, or by a crashed attempt): read
        again by name, it is still there (NotFound or FailedPrecondition if not), and the
        record follows it. Nothing of the refused attempt was written but its marks (and its
        blob reference, which the second attempt holds already)."""
        try:
            return await self._write_grouped(pending)
        except NotFound:
            record = pending.record
            self._delivery_boxes.pop((record["user"], record["mailbox"]))
            box = await self._mailbox_doc(record["user"], record["mailbox"])
        moved = {"mailbox_id": box["_id"], "uidvalidity": box["uidvalidity"]}
        await self._deliveries.update_one({"_id": record["_id"], "state": PENDING}, {"$set": moved})
        pending.record = {**record, **moved}
        return await self._write_grouped(pending)

    async def _write_grouped(self, pending: Pending) -> tuple[Doc, bool]:
        """Record (if not inserted yet), blob reference, allocation and insert, together with
        every delivery queued for the same mailbox meanwhile, by the mailbox's writer
        (``grouping.py``), which then records the group's outcomes. Each is answered once its
        marks are cleared and its outcome recorded, as a lone delivery was."""
        mailbox_id = pending.record["mailbox_id"]
        waiter = self._groups.join(mailbox_id, pending)
        self._groups.ensure_writer(mailbox_id, lambda: self._write_groups(mailbox_id))
        try:
            mine: tuple[Doc, bool] = await asyncio.shield(waiter.future)
        except asyncio.CancelledError:
            # Not taken yet: withdrawn. Taken: its group is written all the same, and a retry
            # of this delivery finds it done.
            if not waiter.taken:
                self._groups.leave(mailbox_id, waiter)
            raise
        return mine

    async def _write_groups(self, mailbox_id: ObjectId) -> None:
        """The mailbox's writer: groups of the queued deliveries, one after the other, until
        none is queued. A delivery whose blob step fails fails alone; a failed allocation or
        insert fails its group's deliveries only.

        Each delivery's steps keep their order (record -> reference -> blob -> index ->
        allocation -> message -> outcome), but a group takes each step together: the group's
        records are one ``insert`` command, its blob references another, its blobs and its
        indexes one each (``coalesce.py`` sends what is queued at once together), where each
        Delivery taking these steps on its own met only the few others that happened to be at
        the same step (ADR 67). Taken
        between two holds of the mailbox lock: the group is what queued until the writer got
        the lock (as before), but a blob step needs no lock, so an Append or STORE waits for
        the allocation and insert only."""
        while True:
            group: list[Waiter] = []
            ready: list[Waiter] = []
            written: list[tuple[Doc, bool]] = []
            try:
                async with self._locks.hold(mailbox_id):
                    group = self._groups.next_group(mailbox_id)
                if not group:
                    return
                ready = await self._step_reference_blobs(group)
                if ready:
                    async with self._mailbox_writes(mailbox_id):
                        written = await self._step_insert_messages(
                            await self._step_allocate([w.item.record for w in ready])
                        )
                    # Outside the lock: an Append or STORE need not wait for it.
                    await self._step_mark_done([r for r, _ in written])
            except asyncio.CancelledError as e:
                for w in group + self._groups.writer_gone(mailbox_id):
                    w.fail(e)
                raise
            except Exception as e:
                for w in group:  # those failed already keep their own error
                    w.fail(e)
                continue
            for w, outcome in zip(ready, written, strict=True):
                w.settle(outcome)

    async def _step_reference_blobs(self, group: list[Waiter]) -> list[Waiter]:
        """Steps 1 (for a delivery whose caller left its record to the writer) and 2a for
        each delivery of a group, all at once (so their inserts share commands); those whose
        step failed (or that turn out to be redeliveries) are failed here, the others
        returned."""
        todo = [w for w in group if not w.item.referenced]
        outcomes = await asyncio.gather(
            *(self._step_admit_and_reference(w.item) for w in todo), return_exceptions=True
        )
        failed: set[int] = set()
        for w, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Exception):
                w.fail(outcome)
                failed.add(id(w))
            elif isinstance(outcome, BaseException):
                raise outcome
        return [w for w in group if id(w) not in failed]

    @staticmethod
    def _result(
        record: Doc, *, duplicate: bool, created: bool, created_mailboxes: list[str] | None = None
    ) -> DeliverResult:
        return DeliverResult(
            int(record["uid"]), int(record["uidvalidity"]), record["mailbox"],
            int(record["modseq"]), duplicate=duplicate, created=created,
            created_mailboxes=tuple(created_mailboxes or ()),
        )  # fmt: skip

    async def _step_admit_and_reference(self, pending: Pending) -> None:
        if not pending.admitted:
            if not await self._delivery_inserts.insert(pending.record):
                raise Redelivered(pending.record["_id"])
            pending.admitted = True
        await self._step_reference_blob(pending)

    async def _step_reference_blob(self, pending: Pending) -> None:
        record = pending.record
        await self.blobs.acquire(record["_id"], record["blob_id"], pending.source)
        await self.blobs.put_index(record["blob_id"], pending.index)
        pending.referenced = True

    async def _step_allocate(self, records: list[Doc]) -> list[Doc]:
        """Take a UID and a MODSEQ for each delivery of a group, in one update (caller holds the
        mailbox lock). Not recorded before the message is: an attempt that dies here leaves a
        gap in the UIDs (RFC 9051 section 2.3.1.1 allows gaps), and a late retry takes a new
        UID, never one below those shown."""
        # Named after the delivery, a mark is replaced by this attempt's if a crashed attempt
        # left one, instead of holding readers back until it goes stale.
        n = len(records)
        marks = [delivery_mark(r["_id"]) for r in records]
        first = records[0]
        uid, modseq = await self._allocate_each(first["mailbox_id"], n, n, marks, first["mailbox"])
        # One MODSEQ each, in UID order: the same values as n deliveries one after another.
        return [{**r, "uid": uid + i, "modseq": modseq + i} for i, r in enumerate(records)]

    async def _step_insert_messages(self, records: list[Doc]) -> list[tuple[Doc, bool]]:
        """Insert the messages (_id = delivery key); returns each record as its message shows
        it and whether this call inserted it."""
        docs = [self._message_doc(r["_id"], r) for r in records]
        taken: set[int] = set()
        try:
            await self._messages.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            if any(err.get("code") != 11000 for err in errors):
                raise
            # Another attempt (another store replica, or the same key twice in this group)
            # inserted it first: report its UID.
            taken = {int(err["index"]) for err in errors}
        for i, (r, doc) in enumerate(zip(records, docs, strict=True)):
            if i not in taken:  # as written: the mailbox's next snapshot refresh needs no read
                self._snapshots.written(r["mailbox_id"], int(r["uidvalidity"]), doc)
        return [
            await self._existing_message(r) if i in taken else (r, True)
            for i, r in enumerate(records)
        ]

    async def _existing_message(self, record: Doc) -> tuple[Doc, bool]:
        msg = await self._messages.find_one({"_id": record["_id"]})
        if msg is None:
            raise Unavailable("concurrent delivery of the same message; retry")
        return {**record, "uid": msg["uid"], "modseq": msg["modseq"]}, False

    @staticmethod
    def _message_doc(mid: str, fields: Doc) -> Doc:
        return {
            "_id": mid, "mailbox_id": fields["mailbox_id"], "user": fields["user"],
            "uid": fields["uid"], "modseq": fields["modseq"], "flags": list(fields["flags"]),
            "internal_date": fields["internal_date"], "size": fields["size"],
            "blob_id": fields["blob_id"], "sent_day": fields.get("sent_day"),
            # Absent from a delivery recorded before it was (ADR 0042): not known.
            "wire_ready": fields.get("wire_ready"), "expunged": False, "released": False,
            # A delivery recorded before header indexing has none: searched in Python.
            **({"sh": fields["sh"], "shv": fields["shv"]} if "shv" in fields else {}),
        }  # fmt: skip

    async def _step_mark_done(self, records: list[Doc]) -> None:
        """Done, with the UID each message got: what a repeated Deliver answers from then on.
        Recorded as an outcome document per delivery (``_id`` = delivery key, inserted: a
        duplicate means an earlier attempt recorded it), the group's in one ``insert``
        command. Not an update of the record: FerretDB 1.24 runs each statement of an
        ``update`` as a read and a transaction of its own, which made marking done the most
        expensive write of a Deliver (ADR 67)."""
        outcomes = [
            {
                "_id": r["_id"], "uid": r["uid"], "modseq": r["modseq"],
                "uidvalidity": r["uidvalidity"], "mailbox": r["mailbox"],
                "created_at": time.time(),
            }
            for r in records
        ]  # fmt: skip
        await asyncio.gather(*(self._outcome_inserts.insert(o) for o in outcomes))

    async def _with_outcome(self, record: Doc | None) -> Doc | None:
        """A delivery record as done, with its message's UID, if its outcome was recorded
        (or the record itself says so: marked done in place before ADR 67)."""
        if record is None or record["state"] == DONE:
            return record
        outcome = await self._delivered.find_one({"_id": record["_id"]})
        return record if outcome is None else {**record, **outcome, "state": DONE}

    # -- append ------------------------------------------------------------------------------

    async def _check_append(self, user: str, mailbox: str, size: int) -> None:
        await self._mailbox_doc(user, mailbox)
        await self._check_quota(user, size, 1)

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
        """Blob reference (the message's own id) -> index -> UID -> message. A crash before
        the message leaves only an unused reference (the janitor's); the client saw no OK and
        may retry, which makes one message (RFC 9051 section 6.3.12 has no idempotency key)."""
        box = await self._mailbox_doc(user, mailbox)
        mid = uuid.uuid4().hex
        reserved = await self._reserve_quota(user, mid, source.size, 1)
        try:
            await self.blobs.acquire(mid, source.blob_id, source)
            await self.blobs.put_index(source.blob_id, index)
            async with self._mailbox_writes(box["_id"]):
                uid, modseq = await self._allocate(box["_id"], 1)
                doc = self._message_doc(
                    mid,
                    {
                        "mailbox_id": box["_id"],
                        "user": user,
                        "uid": uid,
                        "modseq": modseq,
                        "flags": flags,
                        "internal_date": internal_date,
                        "size": source.size,
                        "blob_id": source.blob_id,
                        "sent_day": index.sent_day,
                        "wire_ready": index.wire_ready,
                        **search_filter.header_fields(search_headers(index)),
                    },
                )
                await self._messages.insert_one(doc)
                self._snapshots.written(box["_id"], int(box["uidvalidity"]), doc)
                recent_first = 0
                if claim_recent:
                    # The appending session's \Recent claim up to its message, before the
                    # UID is visible to anyone else (under this block's mailbox lock).
                    recent_first = await self._raise_first_recent(box["_id"], uid) or 0
        finally:
            # Written or not, nothing of this call is left to finish (no retry resumes it).
            if reserved:
                await self._drop_reservation(mid)
        return AppendResult(
            uid, int(box["uidvalidity"]), modseq, mailbox, recent_first=recent_first
        )

    async def _put_blob(self, source: BlobSource) -> None:
        # A pin per upload (not per blob): uploads of one content by two edges both hold it.
        expires = time.time() + self.upload_pin_seconds
        await self.blobs.acquire(
            f"upload-{uuid.uuid4().hex}", source.blob_id, source, kind=UPLOAD, expires_at=expires
        )

    async def _get_index(self, blob_id: str) -> MessageIndex | None:
        return await self.blobs.get_index(blob_id)

    async def _put_index(self, blob_id: str, index: MessageIndex) -> None:
        await self.blobs.put_index(blob_id, index)
