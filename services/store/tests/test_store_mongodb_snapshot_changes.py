"""``Snapshot.changes_since``: what a MongoDB store replica answers a GetChanges with, from its
mailbox snapshot, while only new messages came (ADR 77)."""

from __future__ import annotations

from bson import ObjectId

from postmesh.store.mongodb.snapshots import Snapshot


def _doc(uid: int, modseq: int, flags: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "uid": uid, "modseq": modseq, "flags": list(flags), "size": 100 + uid,
        "internal_date": 1_700_000_000 + uid, "blob_id": f"b{uid}", "expunged": False,
    }  # fmt: skip


def _snapshot() -> Snapshot:
    """UIDs 1-3 from before (changed since, MODSEQs out of UID order), then new messages 4-9
    with MODSEQs 20-25 in UID order; UID 7 was never written (its writer crashed)."""
    snap = Snapshot((ObjectId(), 1))
    for uid, modseq in ((1, 18), (2, 5), (3, 19)):
        snap.apply(_doc(uid, modseq, ("\\Seen",)))
    for uid, modseq in ((4, 20), (5, 21), (6, 22), (8, 24), (9, 25)):
        snap.apply(_doc(uid, modseq))
    snap.version, snap.uidnext = 25, 10
    snap.clean_from, snap.clean_uid = 19, 4  # the refresh at MODSEQ 19 read changes
    return snap


def test_new_messages_above_the_modseq_asked_in_uid_order() -> None:
    snap = _snapshot()
    found = snap.changes_since(21)
    assert found is not None
    assert [(m.uid, m.modseq) for m in found] == [(6, 22), (8, 24), (9, 25)]
    first = found[0]
    assert (first.flags, first.size, first.internal_date, first.blob_id) == (
        (),
        106,
        1_700_000_006,
        "b6",
    )


def test_every_new_message_from_the_clean_point_on_and_none_from_before() -> None:
    found = _snapshot().changes_since(19)
    assert found is not None
    assert [m.uid for m in found] == [4, 5, 6, 8, 9]  # not 1 or 3, changed before MODSEQ 19


def test_nothing_above_the_last_modseq() -> None:
    assert _snapshot().changes_since(25) == []


def test_below_the_clean_point_the_snapshot_does_not_know() -> None:
    # What changed between 18 and 19 (UID 3's flags) is not among its new messages: read it.
    assert _snapshot().changes_since(18) is None
