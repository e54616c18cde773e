"""Deliver and Append on the MongoDB API.

Without multi-document transactions, Deliver is a sequence of single-document writes, each
idempotent, recorded in a delivery document so a retry after a crash at any point resumes
where the first attempt stopped (see ``_deliver``). UIDs and MODSEQs come from ``$inc`` on the
mailbox document under the mailbox lock, as WildDuck does.
"""

from __future__ import annotations

import time
import uuid

from pymongo.errors import DuplicateKeyError

from postmesh.store.blobs import BlobSource
from postmesh.store.errors import InvalidArgument, Unavailable
from postmesh.store.indexing import search_headers
from postmesh.store.model import AppendResult, DeliverResult, Delivery, MessageIndex
from postmesh.store.mongodb import search_filter
from postmesh.store.mongodb.base import Doc, key_of
from postmesh.store.mongodb.blobs import DELETING, UPLOAD
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


class MongoDelivery(MongoMailboxes):
    async def _deliver(
        self, delivery: Delivery, source: BlobSource | None, index: MessageIndex | None
    ) -> DeliverResult:
        """Steps, each idempotent, so a retry resumes after a crash anywhere:

        0. a user never seen is provisioned first (idempotent, see ``_provision``); under a
           limit, the message's usage is reserved under the delivery key (``reservations.py``)
           and the reservation dropped after step 3;
        1. insert the delivery document {_id: key, state: pending} (unique _id: the first
           attempt wins; a retry reads it back, and returns at once if it is done);
        2. if the message document does not exist yet:
           a. take the blob reference (ref _id = delivery key: held at most once) and store
              the parsed index with the blob;
           b. allocate UID and MODSEQ with $inc and record them in the delivery document only
              if none is recorded (a crash in between burns a UID, which RFC 9051 allows);
           c. insert the message with _id = delivery key (a duplicate means it exists);
        3. mark the delivery done.
        """
        assert delivery.blob_id is not None
        blob_id = delivery.blob_id
        did = delivery_key(delivery.queue_id, delivery.user, delivery.mailbox)
        # Fast path for a redelivered record, valid even after the message (and maybe its
        # blob) is long gone.
        earlier = await self._deliveries.find_one({"_id": did})
        if earlier is not None and earlier["state"] == DONE:
            return self._result(earlier, duplicate=True, created=False)
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
        user_doc = await self._user_doc(delivery.user)
        if user_doc is None or not user_doc.get("provisioned"):
            async with self._locks.hold(user_key(delivery.user)):
                created_mailboxes = (await self._provision_locked(delivery.user)).created
        mbox = await self._mailbox_doc(delivery.user, delivery.mailbox)
        # The message's usage, reserved under its delivery key before anything is written
        # (reservations.py): a retry reuses the reservation (or reserves again if it lapsed).
        reserved = False
        if earlier is None:
            reserved = await self._reserve_quota(delivery.user, did, size, 1, user_doc)

        record: Doc = {
            "_id": did, "queue_id": delivery.queue_id, "user": delivery.user,
            "mailbox": delivery.mailbox, "mailbox_id": mbox["_id"],
            "uidvalidity": mbox["uidvalidity"], "blob_id": blob_id, "size": size,
            "flags": list(delivery.flags), "internal_date": delivery.internal_date,
            "sent_day": index.sent_day, "state": PENDING, "created_at": time.time(),
            **search_filter.header_fields(search_headers(index)),
        }  # fmt: skip
        duplicate = False
        try:
            await self._deliveries.insert_one(record)
        except DuplicateKeyError:
            duplicate = True
            created_mailboxes = []
            found = await self._deliveries.find_one({"_id": did})
            if found is None:
                raise Unavailable("delivery record vanished; retry") from None
            record = found
            if record["state"] == DONE:
                return self._result(record, duplicate=True, created=False)
            if record["blob_id"] != blob_id:
                raise InvalidArgument(
                    f"queue id {delivery.queue_id} was delivered with other content"
                ) from None
        created = False
        written = await self._messages.find_one({"_id": did}, {"uid": 1, "modseq": 1})
        if written is None:
            if earlier is not None or duplicate:
                reserved = await self._reserve_quota(delivery.user, did, record["size"], 1)
            await self._step_reference_blob(record, source, index)
            # Allocation and insert under the mailbox lock: UIDs become visible in ascending
            # order (a client told UIDNEXT=n must never later see a UID below n appear).
            async with self._mailbox_writes(record["mailbox_id"]):
                record = await self._step_allocate(record)
                record, created = await self._step_insert_message(record)
        else:
            record = {**record, "uid": written["uid"], "modseq": written["modseq"]}
            # The attempt that wrote the message died before clearing its pending mark: cleared
            # under the mailbox lock like any other (FerretDB applies updates of one document
            # read-then-write, so an unlocked one could undo a concurrent allocation).
            async with self._mailbox_writes(record["mailbox_id"]):
                self._settle_later(record["mailbox_id"], delivery_mark(did))
        await self._step_mark_done(record)
        if reserved:  # the message exists and counts itself from now on
            await self._drop_reservation(did)
        return self._result(
            record, duplicate=duplicate, created=created, created_mailboxes=created_mailboxes
        )

    @staticmethod
    def _result(
        record: Doc, *, duplicate: bool, created: bool, created_mailboxes: list[str] | None = None
    ) -> DeliverResult:
        return DeliverResult(
            int(record["uid"]), int(record["uidvalidity"]), record["mailbox"],
            int(record["modseq"]), duplicate=duplicate, created=created,
            created_mailboxes=tuple(created_mailboxes or ()),
        )  # fmt: skip

    async def _step_reference_blob(
        self, record: Doc, source: BlobSource | None, index: MessageIndex
    ) -> None:
        await self.blobs.acquire(record["_id"], record["blob_id"], source)
        await self.blobs.put_index(record["blob_id"], index)

    async def _step_allocate(self, record: Doc) -> Doc:
        """Take a UID for the delivery (caller holds the mailbox lock). Not recorded before the
        message is: an attempt that dies here leaves a gap in the UIDs (RFC 9051 section
        2.3.1.1 allows gaps), and a late retry takes a new UID, never one below those shown."""
        # Named after the delivery, the mark is replaced by this attempt's if a crashed attempt
        # left one, instead of holding readers back until it goes stale.
        uid, modseq = await self._allocate(record["mailbox_id"], 1, delivery_mark(record["_id"]))
        return {**record, "uid": uid, "modseq": modseq}

    async def _step_insert_message(self, record: Doc) -> tuple[Doc, bool]:
        """Insert the message (_id = delivery key); returns the record as the message shows it
        and whether this call inserted it."""
        try:
            await self._messages.insert_one(self._message_doc(record["_id"], record))
        except DuplicateKeyError:
            # Another attempt (another store replica) inserted it first: report its UID.
            msg = await self._messages.find_one({"_id": record["_id"]})
            if msg is None:
                raise Unavailable("concurrent delivery of the same message; retry") from None
            return {**record, "uid": msg["uid"], "modseq": msg["modseq"]}, False
        return record, True

    @staticmethod
    def _message_doc(mid: str, fields: Doc) -> Doc:
        return {
            "_id": mid, "mailbox_id": fields["mailbox_id"], "user": fields["user"],
            "uid": fields["uid"], "modseq": fields["modseq"], "flags": list(fields["flags"]),
            "internal_date": fields["internal_date"], "size": fields["size"],
            "blob_id": fields["blob_id"], "sent_day": fields.get("sent_day"),
            "expunged": False, "released": False,
            # A delivery recorded before header indexing has none: searched in Python.
            **({"sh": fields["sh"], "shv": fields["shv"]} if "shv" in fields else {}),
        }  # fmt: skip

    async def _step_mark_done(self, record: Doc) -> None:
        """Done, with the UID the message got: what a repeated Deliver answers from then on."""
        await self._deliveries.update_one(
            {"_id": record["_id"]},
            {"$set": {"state": DONE, "uid": record["uid"], "modseq": record["modseq"]}},
        )

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
                await self._messages.insert_one(
                    self._message_doc(
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
                            **search_filter.header_fields(search_headers(index)),
                        },
                    )
                )
        finally:
            # Written or not, nothing of this call is left to finish (no retry resumes it).
            if reserved:
                await self._drop_reservation(mid)
        return AppendResult(uid, int(box["uidvalidity"]), modseq, mailbox)

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
