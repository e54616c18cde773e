"""FETCH MODSEQ and the FETCH modifiers CHANGEDSINCE and VANISHED (RFC 7162 §3.1.4.1, §3.2.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_modseq_item_enables_condstore(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"a FETCH 1:2 (MODSEQ)") == [
        # The store gives a new mailbox MODSEQ 1: the seed's messages have 2, 3 and 4.
        b"* 1 FETCH (MODSEQ (2))",
        b"* 2 FETCH (MODSEQ (3))",
        b"a OK FETCH completed",
    ]
    # FETCH MODSEQ is a CONDSTORE-enabling command: STORE now reports MODSEQ too (§3.1).
    assert await c.cmd(b"b STORE 2 +FLAGS (\\Answered)") == [
        b"* 2 FETCH (FLAGS (\\Answered) MODSEQ (5))",
        b"b OK STORE completed",
    ]
    c.writer.close()


async def test_changedsince(env: Env) -> None:
    c = await Client.selected(env)
    # Only the messages whose MODSEQ is above 3, with MODSEQ implied (RFC 7162 §3.1.4.1).
    assert await c.cmd(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 3)") == [
        b"* 3 FETCH (FLAGS (\\Flagged) MODSEQ (4))",
        b"a OK FETCH completed",
    ]
    await env.set_flags(1, ["\\Seen", "\\Answered"])  # MODSEQ 5, elsewhere
    assert await c.cmd(b"b UID FETCH 1:* (UID) (CHANGEDSINCE 4)") == [
        b"* 1 FETCH (UID 1 MODSEQ (5))",
        # The client was not sent the new flags: they follow as an update (RFC 7162 §3.2).
        b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen) MODSEQ (5))",  # the store's order
        b"b OK FETCH completed",
    ]
    assert await c.cmd(b"c FETCH 1:* (FLAGS) (CHANGEDSINCE 5)") == [b"c OK FETCH completed"]
    c.writer.close()


async def test_vanished_needs_qresync_uid_fetch_and_changedsince(env: Env) -> None:
    c = await Client.selected(env)
    for command in (
        b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",  # QRESYNC not enabled
        b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",  # not a UID FETCH
        b"a UID FETCH 1:* (FLAGS) (VANISHED)",  # without CHANGEDSINCE
        b"a UID FETCH 1:* (FLAGS) (VANISHED VANISHED CHANGEDSINCE 1)",
    ):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (command, reply)
    assert (await c.cmd(b"n NOOP"))[-1] == b"n OK NOOP completed"
    c.writer.close()


async def test_vanished_earlier(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"e ENABLE QRESYNC")
    await c.cmd(b"s SELECT INBOX")
    await env.expunge_elsewhere([1])  # MODSEQ 5 (\\Deleted) and 6
    await env.set_flags(3, ["\\Seen"])  # MODSEQ 7
    assert await c.cmd(b"a UID FETCH 2:* (FLAGS) (CHANGEDSINCE 4 VANISHED)") == [
        # UID 1 is outside the requested set: not reported as VANISHED (EARLIER).
        b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (7))",
        b"* VANISHED 1",  # the expunge itself, allowed after UID FETCH (RFC 9051 §7.5.1)
        b"a OK FETCH completed",
    ]
    await env.expunge_elsewhere([2])  # MODSEQ 8 and 9
    assert await c.cmd(b"b UID FETCH 1:3 (FLAGS) (CHANGEDSINCE 4 VANISHED)") == [
        b"* VANISHED (EARLIER) 1:2",
        b"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (7))",  # UID 2 is message 1 now
        b"* VANISHED 2",
        b"b OK FETCH completed",
    ]
    c.writer.close()
