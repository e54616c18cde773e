"""``Snapshots.live_rows``: content and metadata reads on the MongoDB store take the messages'
blob ids from the mailbox's kept snapshot only while that snapshot is exact for the mailbox
document just read (ADR 81); anything else is asked of the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from bson import ObjectId

from postmesh.store.mongodb.snapshots import Snapshots

Doc = dict[str, Any]


class _Messages:
    """The one query a snapshot's first take makes: the mailbox's live messages."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = docs
        self.queries = 0

    def find(self, query: Doc, projection: Doc) -> AsyncIterator[Doc]:
        self.queries += 1

        async def found() -> AsyncIterator[Doc]:
            for d in self.docs:
                if d["mailbox_id"] == query["mailbox_id"] and not d["expunged"]:
                    yield {k: v for k, v in d.items() if projection.get(k)}

        return found()


def _message(mailbox_id: ObjectId, uid: int, wire_ready: bool | None) -> Doc:
    doc: Doc = {
        "mailbox_id": mailbox_id, "uid": uid, "modseq": uid + 1, "flags": [], "size": 10 * uid,
        "internal_date": 1_700_000_000, "blob_id": f"b{uid}", "expunged": False,
    }  # fmt: skip
    if wire_ready is not None:  # absent from a message stored before it was recorded
        doc["wire_ready"] = wire_ready
    return doc


async def test_rows_only_while_the_snapshot_is_exact() -> None:
    mid = ObjectId()
    messages = _Messages([_message(mid, 1, True), _message(mid, 2, None), _message(mid, 3, False)])
    snapshots = Snapshots(cast(Any, messages), cast(Any, None))
    mbox: Doc = {"_id": mid, "uidvalidity": 7, "uidnext": 4, "highestmodseq": 4}
    assert snapshots.live_rows(mbox, [1]) is None  # nothing kept yet: no query made for it
    assert messages.queries == 0
    await snapshots.current(mbox)
    assert messages.queries == 1
    rows = snapshots.live_rows(mbox, [1, 2, 3, 2])
    assert rows is not None and sorted(rows) == [1, 2, 3]
    assert (rows[1][4], rows[1][2], rows[1][5]) == ("b1", 10, True)
    assert rows[2][5] is None and rows[3][5] is False  # None: not known, the reader scans
    # A UID not in the snapshot is left out, for the caller to ask the database.
    assert snapshots.live_rows(mbox, [9]) == {}
    rows = snapshots.live_rows(mbox, [1, 9])
    assert rows is not None and sorted(rows) == [1]
    # Any MODSEQ allocated since (a flag change, an expunge, a new message), another
    # UIDVALIDITY or another mailbox: not exact, so not used, and no refresh either.
    assert snapshots.live_rows({**mbox, "highestmodseq": 5}, [1]) is None
    assert snapshots.live_rows({**mbox, "uidvalidity": 8}, [1]) is None
    assert snapshots.live_rows({**mbox, "_id": ObjectId()}, [1]) is None
    assert messages.queries == 1


async def test_rows_from_a_refresh_of_written_messages_carry_their_wire_form() -> None:
    mid = ObjectId()
    messages = _Messages([_message(mid, 1, True)])
    snapshots = Snapshots(cast(Any, messages), cast(Any, None))
    mbox: Doc = {"_id": mid, "uidvalidity": 7, "uidnext": 2, "highestmodseq": 2}
    await snapshots.current(mbox)
    # This process inserted UID 2 (a Deliver's group): the refresh applies its document as
    # acknowledged instead of reading it back.
    snapshots.written(mid, 7, _message(mid, 2, False))
    later = {**mbox, "uidnext": 3, "highestmodseq": 3}
    await snapshots.current(later)
    assert messages.queries == 1
    rows = snapshots.live_rows(later, [2])
    assert rows is not None and (rows[2][4], rows[2][5]) == ("b2", False)
