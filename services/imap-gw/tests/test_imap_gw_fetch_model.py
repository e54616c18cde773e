"""FETCH of UID/FLAGS/MODSEQ answered from the selected-mailbox model after a GetChanges
(``commands/fetch_flags.py``): as fresh as a listing from the store, without one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from conftest import Env


# Not yet moved to the real store in-process (store_env): conftest's FakeStore (ADR 24).
USES_FAKE_STORE = True


async def test_select_lists_compactly_and_fetch_flags_asks_only_for_changes(env: Env) -> None:
    env.inbox.add(env.make_message("fourth"), flags=["$Work"])
    c = await Client.selected(env)
    # SELECT paged through ListMessageFlags (page size 2 here), never the full listing.
    calls = [k for k, _ in env.store.calls]
    assert calls.count("list_flags") == 2 and "list_messages" not in calls
    env.store.calls.clear()
    assert await c.cmd(b"a UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Seen))",
        b"* 2 FETCH (UID 2 FLAGS ())",
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))",
        b"* 4 FETCH (UID 4 FLAGS ($Work))",
        b"a OK FETCH completed",
    ]
    assert env.store.calls == [("get_changes", 4)]
    # Items in the order asked for.
    assert await c.cmd(b"b FETCH 2:3 (MODSEQ FLAGS UID)") == [
        b"* 2 FETCH (MODSEQ (2) FLAGS () UID 2)",
        b"* 3 FETCH (MODSEQ (3) FLAGS (\\Flagged) UID 3)",
        b"b OK FETCH completed",
    ]
    c.writer.close()


async def test_fetch_flags_sees_a_change_whose_event_never_came(env: Env) -> None:
    c = await Client.selected(env)
    env.inbox.set_flags(2, ["\\Answered"])  # elsewhere, and no mailbox event (bus down)
    assert await c.cmd(b"a FETCH 1:3 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Seen))",
        b"* 2 FETCH (FLAGS (\\Answered))",
        b"* 3 FETCH (FLAGS (\\Flagged))",
        # The new flags were in the answer: no unsolicited FETCH follows.
        b"a OK FETCH completed",
    ]
    env.inbox.set_flags(3, ["\\Deleted"])
    # UID alone does not tell the flags: the change follows as an update (RFC 9051 §7.4.2).
    assert await c.cmd(b"b UID FETCH 3 (UID)") == [
        b"* 3 FETCH (UID 3)",
        b"* 3 FETCH (UID 3 FLAGS (\\Deleted))",
        b"b OK FETCH completed",
    ]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_fetch_flags_leaves_out_messages_expunged_elsewhere(env: Env) -> None:
    c = await Client.selected(env)
    env.inbox.remove([2])  # no event either
    # FETCH may not send EXPUNGE (RFC 9051 §7.5.1): the message is left out and NO says why.
    assert await c.cmd(b"a FETCH 1:3 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Seen))",
        b"* 3 FETCH (FLAGS (\\Flagged))",
        b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
    ]
    # UID FETCH may: the numbers are still the old ones until the EXPUNGE after it.
    assert await c.cmd(b"b UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Seen))",
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))",
        b"* 2 EXPUNGE",
        b"b OK FETCH completed",
    ]
    assert await c.cmd(b"c FETCH 2 (UID)") == [b"* 2 FETCH (UID 3)", b"c OK FETCH completed"]
    c.writer.close()


async def test_fetch_flags_in_a_mailbox_gone_or_recreated_ends_the_session(env: Env) -> None:
    for recreate in (False, True):
        env.store.mailbox(env.user, "Work").add(env.make_message("w"))
        c = await Client.selected(env, mailbox="Work")
        del env.store.boxes[env.user]["Work"]  # deleted elsewhere, no event
        if recreate:  # and made again under the same name: a new UIDVALIDITY
            env.store.mailbox(env.user, "Work", uidvalidity=9999).add(env.make_message("x"))
        await c.send(b"a FETCH 1 (FLAGS)")
        assert (await c.line()).startswith(b"* BYE [NONEXISTENT] ")
        assert (await c.line()).startswith(b"a NO [NONEXISTENT] ")
        assert await c.reader.read() == b""
        env.store.boxes[env.user].pop("Work", None)
