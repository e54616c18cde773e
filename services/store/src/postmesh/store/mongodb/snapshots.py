"""Per-mailbox snapshots of the live messages' UID, MODSEQ, flags and size, kept by a store
process and brought up to date with what changed since (ADR 60).

SELECT asks for a mailbox's counts (GetMailbox) and for its UIDs, MODSEQs and flags
(ListMessageFlags); FETCH of FLAGS, RFC822.SIZE or INTERNALDATE for the messages' summaries
(ListMessages); a poll (GetChanges) for what changed after a MODSEQ, which the snapshot answers
while only new messages came (``Snapshot.changes_since``, ADR 77). Read from MongoDB, each is a
pass over every message of the mailbox, and FerretDB 1.24 decodes every document whole for it:
a 10,000-message SELECT cost ~100 ms of its CPU. A snapshot taken at MODSEQ ``H`` is brought up
to date by the messages whose MODSEQ is above ``H``, as a CONDSTORE client resynchronises (RFC
7162 section 3.1): every change to a message gives it a new MODSEQ -- a new message, a flag
change (``_store_flags`` compares and sets it), an EXPUNGE's or a MOVE's tombstone. FerretDB
1.24 pushes no range down to PostgreSQL, so that query still decodes every message of the
mailbox there; but most refreshes follow new messages alone, and those are read one by one by
UID (an equality it pushes): the mailbox document's ``changes`` counts the allocations that
change existing messages (every one with no new UID), so while it stands, what lies between the
snapshot's UIDNEXT and the mailbox's visible one is all that changed.

Exact because:
- ``H`` is the mailbox's visible HIGHESTMODSEQ (``watermark.py``) read before the query: every
  write at or below it is complete and seen by the query; one above it is applied now if it is
  already written, else by the next refresh (applying a message's state twice is harmless);
- the janitor raises ``vanished_floor`` before it removes tombstones: a floor above ``H``, read
  after the query, may hide removals, and the snapshot is taken again;
- a mailbox whose messages go without tombstones (a DELETE's purge) is made \\Noselect or removed
  first: such a mailbox is never served from a snapshot, and one selectable again has a new
  UIDVALIDITY, which is part of the snapshot's key.

New messages this process inserted itself (a Deliver's group) are not read back at all: the
insert's acknowledged document is kept (``written``, bounded) and applied as the read by UID
would have returned it. On that path nothing but new messages changed since the snapshot
(``changes`` stands, one MODSEQ per new UID), so no write since has touched them (ADR 63).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection

from postmesh.common.lru import Lru
from postmesh.store.model import Message
from postmesh.store.mongodb import watermark
from postmesh.store.mongodb.locks import KeyedLocks
from postmesh.store.validation import DELETED, SEEN

Doc = dict[str, Any]
Counts = tuple[int, int, int, int]  # messages, seen, deleted, size
# modseq, flags, size, internal date, blob id: what a Message has besides its UID; and
# whether its content is in wire form (ADR 0042; None: not known), for reads of the content.
Row = tuple[int, tuple[str, ...], int, int, str, bool | None]
_FIELDS = {
    "_id": 0, "uid": 1, "modseq": 1, "flags": 1, "size": 1, "expunged": 1, "internal_date": 1,
    "blob_id": 1, "wire_ready": 1,
}  # fmt: skip

# Rows all snapshots of one store process hold at most (~250 bytes each in CPython, the blob
# id's string included: ~50 MiB);
# the least recently used mailboxes go first.
MAX_ROWS = 200_000
# New messages read one by one at most; more at once are read by the MODSEQ query (unless
# this process wrote every one of them: then none is read).
NEW_BY_UID = 64
# Inserted message documents kept for the next refresh of their mailbox (~200 bytes each): a
# mailbox nobody selects leaves its own to be pushed out, and one pushed out is read by UID.
MAX_WRITTEN = 20_000


class Snapshot:
    """One mailbox's live messages as of ``version`` (and possibly some later changes), with
    its counts kept as rows come and go."""

    __slots__ = (
        "_sets", "changes", "clean_from", "clean_uid", "deleted", "key", "messages", "rows",
        "seen", "size", "uidnext", "version",
    )  # fmt: skip

    def __init__(self, key: tuple[ObjectId, int]) -> None:
        self.key = key
        # As of the mailbox's visible HIGHESTMODSEQ and UIDNEXT and its "changes" counter.
        self.version = self.uidnext = self.changes = 0
        # Since MODSEQ ``clean_from`` (the version of the last refresh that read changes, or
        # took the snapshot), every refresh found new messages alone, from UID ``clean_uid``:
        # what changed after a MODSEQ at or above it is those new messages (changes_since).
        self.clean_from = self.clean_uid = 0
        self.rows: dict[int, Row] = {}
        self.messages = self.seen = self.deleted = self.size = 0
        self._sets: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct set

    def counts(self) -> Counts:
        return self.messages, self.seen, self.deleted, self.size

    def exact_for(self, mbox: Doc) -> bool:
        """Whether the snapshot is exact as of the mailbox document ``mbox`` (as just read)
        without a refresh: the same mailbox and UIDVALIDITY, and no MODSEQ allocated since it
        was brought up to date (every change to a message takes one, watermark.py)."""
        return (
            self.key == (mbox["_id"], int(mbox["uidvalidity"]))
            and int(mbox["highestmodseq"]) == self.version
        )

    def count_between(self, first_uid: int, below_uid: int) -> int:
        """Live messages with ``first_uid`` <= uid < ``below_uid`` (STATUS RECENT)."""
        return sum(1 for uid in self.rows if first_uid <= uid < below_uid)

    def listing(self, after_uid: int, below_uid: int) -> list[tuple[int, int, tuple[str, ...]]]:
        """(uid, modseq, flags) in UID order, ``after_uid`` < uid < ``below_uid``."""
        return [(uid, r[0], r[1]) for uid, r in self._between(after_uid, below_uid)]

    def summaries(self, after_uid: int, below_uid: int) -> list[Message]:
        """The messages ``after_uid`` < uid < ``below_uid``, in UID order (ListMessages)."""
        return [
            Message(uid, r[1], r[2], r[3], r[0], r[4])
            for uid, r in self._between(after_uid, below_uid)
        ]

    def changes_since(self, since: int) -> list[Message] | None:
        """The messages changed after MODSEQ ``since``, in UID order, when the snapshot knows
        them: only new messages came after ``since`` (none of them gone or changed since, or
        the refresh that saw it would have read changes). None: read them."""
        if since < self.clean_from:
            return None
        # From the top down: new messages took their UIDs and MODSEQs in the same order, one
        # each, so those above ``since`` are the last ones (a poll costs what it finds).
        rows = self.rows
        found: list[Message] = []
        for uid in range(self.uidnext - 1, self.clean_uid - 1, -1):
            r = rows.get(uid)
            if r is None:
                continue  # a UID never written (its writer crashed)
            if r[0] <= since:
                break
            found.append(Message(uid, r[1], r[2], r[3], r[0], r[4]))
        found.reverse()
        return found

    def _between(self, after_uid: int, below_uid: int) -> list[tuple[int, Row]]:
        rows = self.rows
        return [(uid, rows[uid]) for uid in sorted(u for u in rows if after_uid < u < below_uid)]

    def apply(self, doc: Doc) -> None:
        uid = int(doc["uid"])
        self._drop(uid)
        if doc.get("expunged"):
            return
        flags = tuple(doc["flags"])
        flags = self._sets.setdefault(flags, flags)
        row = (
            int(doc["modseq"]), flags, int(doc["size"]), int(doc["internal_date"]),
            str(doc["blob_id"]), doc.get("wire_ready"),
        )  # fmt: skip
        self.rows[uid] = row
        self._count(row, 1)

    def _drop(self, uid: int) -> None:
        old = self.rows.pop(uid, None)
        if old is not None:
            self._count(old, -1)

    def _count(self, row: Row, sign: int) -> None:
        self.messages += sign
        self.seen += sign * (SEEN in row[1])
        self.deleted += sign * (DELETED in row[1])
        self.size += sign * row[2]


class Snapshots:
    def __init__(
        self,
        messages: AsyncCollection[Doc],
        mailboxes: AsyncCollection[Doc],
        max_rows: int = MAX_ROWS,
        max_written: int = MAX_WRITTEN,
    ) -> None:
        self._messages = messages
        self._mailboxes = mailboxes
        self._kept: Lru[ObjectId, Snapshot] = Lru(max_rows, lambda snap: len(snap.rows))
        # (mailbox id, UIDVALIDITY, UID) -> the fields of a message document this process
        # inserted, as acknowledged; taken by the mailbox's next refresh.
        self._written: Lru[tuple[ObjectId, int, int], Doc] = Lru(max_written)
        # A leaf lock per mailbox: one refresh at a time, nothing taken under it.
        self._locks = KeyedLocks()

    async def current(self, mbox: Doc) -> Snapshot:
        """The snapshot of a selectable mailbox, brought up to date from its document ``mbox``
        as just read."""
        assert not mbox.get("noselect")
        mailbox_id: ObjectId = mbox["_id"]
        async with self._locks.hold(mailbox_id):
            uidnext, highest = watermark.visible(mbox, time.time())
            changes = int(mbox.get("changes", 0))
            key = (mailbox_id, int(mbox["uidvalidity"]))
            # Out while it is brought up to date (its weight changes), back in at the end.
            snap = self._kept.pop(mailbox_id)
            read_changes = True  # not new messages alone: the clean range starts again
            if snap is None or snap.key != key:
                snap = await self._take(key)
            elif int(mbox["highestmodseq"]) == snap.version:
                read_changes = False  # nothing allocated since (watermark.py): nothing changed
            elif (
                changes == snap.changes
                # New messages take one MODSEQ each (Deliver, Append): also true without the
                # counter, which a replica of an earlier version does not bump (ADR 60).
                and uidnext - snap.uidnext == highest - snap.version
                and (
                    uidnext - snap.uidnext <= NEW_BY_UID
                    or all((*key, uid) in self._written for uid in range(snap.uidnext, uidnext))
                )
            ):
                await self._add_new(snap, uidnext)
                read_changes = False
            elif not await self._catch_up(snap):
                snap = await self._take(key)
            snap.version, snap.uidnext, snap.changes = max(snap.version, highest), uidnext, changes
            if read_changes:
                snap.clean_from, snap.clean_uid = snap.version, uidnext
            self._kept.put(mailbox_id, snap)
            return snap

    async def _take(self, key: tuple[ObjectId, int]) -> Snapshot:
        snap = Snapshot(key)
        async for doc in self._messages.find({"mailbox_id": key[0], "expunged": False}, _FIELDS):
            snap.apply(doc)
        return snap

    def live_rows(self, mbox: Doc, uids: Iterable[int]) -> dict[int, Row] | None:
        """The rows of those of messages ``uids`` that the kept snapshot of the selectable
        mailbox ``mbox`` (its document as just read) has, when that snapshot is exact without
        a refresh; None when it is not (or none is kept). A UID it lacks is for the caller to
        ask the database: one above the visible UIDNEXT may be readable already. No query,
        and no refresh: a refresh after flag changes reads every changed message, more than a
        read by UID costs."""
        snap = self._kept.get(mbox["_id"])
        if snap is None or not snap.exact_for(mbox):
            return None
        rows = snap.rows
        return {uid: row for uid in uids if (row := rows.get(uid)) is not None}

    def written(self, mailbox_id: ObjectId, uidvalidity: int, doc: Doc) -> None:
        """A message document this process inserted, its insert acknowledged: the mailbox's
        next refresh applies it instead of reading it back. ``uidvalidity`` as the writer knew
        it: one that changed since never matches a snapshot's key, and the UID is read."""
        kept = {f: doc[f] for f in _FIELDS if f not in ("_id", "wire_ready")}
        kept["wire_ready"] = doc.get("wire_ready")
        self._written.put((mailbox_id, uidvalidity, int(doc["uid"])), kept)

    async def _add_new(self, snap: Snapshot, uidnext: int) -> None:
        """The messages below the visible UIDNEXT that the snapshot has not seen: as this
        process inserted them, else by UID (a UID never taken, by a crashed writer, has none).
        Applied in UID order."""
        known = {uid: self._written.pop((*snap.key, uid)) for uid in range(snap.uidnext, uidnext)}
        missing = [uid for uid, doc in known.items() if doc is None]
        found = await asyncio.gather(
            *(
                self._messages.find_one({"mailbox_id": snap.key[0], "uid": uid}, _FIELDS)
                for uid in missing
            )
        )
        known.update(zip(missing, found, strict=True))
        for doc in known.values():
            if doc is not None:
                snap.apply(doc)

    async def _catch_up(self, snap: Snapshot) -> bool:
        """Apply what changed above the snapshot's version; False if tombstones it needs may
        have been removed (the snapshot must be taken again)."""
        mailbox_id = snap.key[0]
        changed = await self._messages.find(
            {"mailbox_id": mailbox_id, "modseq": {"$gt": snap.version}}, _FIELDS
        ).to_list(None)
        # After the query: the janitor raises the floor before it removes tombstones.
        floor = await self._mailboxes.find_one({"_id": mailbox_id}, {"vanished_floor": 1})
        if int((floor or {}).get("vanished_floor", 0)) > snap.version:
            return False
        for doc in changed:
            snap.apply(doc)
        return True
