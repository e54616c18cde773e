"""QRESYNC and CONDSTORE resynchronisation after the store's janitor removed the expunge
tombstones a client's MODSEQ would need (GetChanges says ``expunged_incomplete``): every UID
that is not live is reported, a superset RFC 7162 allows (section 3.2.5.2, 3.2.10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

from postmesh.imap_gw.vanished import merge, not_live, uid_set

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


def test_not_live_ranges() -> None:
    assert not_live([2, 3, 7], [(1, 10)]) == [(1, 1), (4, 6), (8, 10)]
    assert not_live([2, 3], [(3, 2)]) == []
    assert not_live([], [(5, 1), (9, 9)]) == [(1, 5), (9, 9)]
    assert not_live([5], [(1, 4), (4, 8)]) == [(1, 4), (6, 8)]
    assert merge([(4, 6), (1, 3), (9, 8)]) == [(1, 6), (8, 9)]
    assert uid_set([(1, 1), (3, 5), (6, 6)]) == "1,3:6"


async def test_qresync_select_after_tombstones_are_gone(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"e ENABLE QRESYNC")
    v = await env.uidvalidity()
    await env.expunge_elsewhere([1])  # MODSEQ 5 (\\Deleted), 6 (the expunge)
    await env.forget_tombstones()  # the vanished floor is now 6
    await env.set_flags(3, ["\\Seen"])  # MODSEQ 7
    # The client's MODSEQ 3 is below the vanished floor: UID 1 is reported although no
    # tombstone says so, and the flag change as usual.
    reply = await c.cmd(b"s SELECT INBOX (QRESYNC (%d 3 1:3))" % v)
    assert b"* VANISHED (EARLIER) 1" in reply
    assert b"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (7))" in reply
    assert reply[-1].startswith(b"s OK ")
    # Without known UIDs: every UID below UIDNEXT that is not live.
    reply = await c.cmd(b"t SELECT INBOX (QRESYNC (%d 3))" % v)
    assert b"* VANISHED (EARLIER) 1" in reply
    # From a MODSEQ at or above the floor the tombstone-based answer is exact (nothing).
    reply = await c.cmd(b"u SELECT INBOX (QRESYNC (%d 7))" % v)
    assert not any(line.startswith(b"* VANISHED") for line in reply)
    c.writer.close()


async def test_fetch_vanished_after_tombstones_are_gone(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"e ENABLE QRESYNC")
    await env.expunge_elsewhere([2])
    await env.forget_tombstones()
    # A client that knew MODSEQ 1 from an earlier session.
    await c.cmd(b"s SELECT INBOX")
    reply = await c.cmd(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert reply[0] == b"* VANISHED (EARLIER) 2"
    assert b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (4))" in reply
    assert reply[-1] == b"f OK FETCH completed"
    c.writer.close()


async def test_a_selected_session_resyncs_by_uid_list(env: Env) -> None:
    """A session whose HIGHESTMODSEQ is below the floor: the expunge comes from comparing the
    UID list, as without MODSEQs."""
    c = await Client.selected(env)
    await env.expunge_elsewhere([2])
    await env.forget_tombstones()
    assert await c.cmd(b"b UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Seen))",
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))",
        b"* 2 EXPUNGE",
        b"b OK FETCH completed",
    ]
    c.writer.close()
