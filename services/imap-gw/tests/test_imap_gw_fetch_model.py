"""FETCH of UID/FLAGS/MODSEQ answered from the selected-mailbox model after a GetChanges
(``commands/fetch_flags.py``): as fresh as a listing from the store, without one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from imap_wire import Client

from postmesh.imap_gw import model_search

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_select_lists_compactly_and_fetch_flags_asks_only_for_changes(env: Env) -> None:
    await env.add(env.make_message("fourth"), flags=["$Work"])
    c = await Client.selected(env)
    # SELECT paged through ListMessageFlags (page size 2 here), never the full listing.
    calls = [k for k, _ in env.mail.calls]
    assert calls.count("list_flags") == 2 and "list_messages" not in calls
    env.mail.calls.clear()
    assert await c.cmd(b"a UID FETCH 1:* (FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Seen))",
        b"* 2 FETCH (UID 2 FLAGS ())",
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))",
        b"* 4 FETCH (UID 4 FLAGS ($Work \\Recent))",  # the one message nobody saw before
        b"a OK FETCH completed",
    ]
    # Since the HIGHESTMODSEQ of SELECT (the store gave INBOX MODSEQ 1, messages 2-5).
    assert env.mail.calls == [("get_changes", (env.user, "INBOX", 5))]
    # Items in the order asked for.
    assert await c.cmd(b"b FETCH 2:3 (MODSEQ FLAGS UID)") == [
        b"* 2 FETCH (MODSEQ (3) FLAGS () UID 2)",
        b"* 3 FETCH (MODSEQ (4) FLAGS (\\Flagged) UID 3)",
        b"b OK FETCH completed",
    ]
    c.writer.close()


async def test_fetch_flags_sees_a_change_whose_event_never_came(env: Env) -> None:
    c = await Client.selected(env)
    # Elsewhere, and no mailbox event (bus down).
    await env.set_flags(2, ["\\Answered"], event=False)
    assert await c.cmd(b"a FETCH 1:3 (FLAGS)") == [
        b"* 1 FETCH (FLAGS (\\Seen))",
        b"* 2 FETCH (FLAGS (\\Answered))",
        b"* 3 FETCH (FLAGS (\\Flagged))",
        # The new flags were in the answer: no unsolicited FETCH follows.
        b"a OK FETCH completed",
    ]
    await env.set_flags(3, ["\\Deleted"], event=False)
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
    await env.expunge_elsewhere([2], event=False)  # no event either
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
    repo = env.store.app.repo
    for recreate in (False, True):
        await repo.create_mailbox(env.user, "Work")
        await env.add(env.make_message("w"), mailbox="Work")
        c = await Client.selected(env, mailbox="Work")
        await repo.delete_mailbox(env.user, "Work")  # deleted elsewhere, no event
        if recreate:  # and made again under the same name: a new UIDVALIDITY
            await repo.create_mailbox(env.user, "Work")
            await env.add(env.make_message("x"), mailbox="Work")
        await c.send(b"a FETCH 1 (FLAGS)")
        assert (await c.line()).startswith(b"* BYE [NONEXISTENT] ")
        assert (await c.line()).startswith(b"a NO [NONEXISTENT] ")
        assert await c.reader.read() == b""
        if recreate:
            await repo.delete_mailbox(env.user, "Work")


async def test_a_repeated_model_search_follows_every_change(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEARCH answered from the model keeps its last answer for the model's version
    (``state.version``): any change, learnt with or without an event, gives a new answer."""
    searched = 0
    original = model_search.search

    def counted(*args: Any) -> tuple[list[int], list[int]]:
        nonlocal searched
        searched += 1
        return original(*args)

    monkeypatch.setattr(model_search, "search", counted)
    c = await Client.selected(env)  # 1 \Seen, 2 (), 3 \Flagged
    assert await c.cmd(b"a SEARCH UNSEEN") == [b"* SEARCH 2 3", b"a OK SEARCH completed"]
    assert await c.cmd(b"b SEARCH UNSEEN") == [b"* SEARCH 2 3", b"b OK SEARCH completed"]
    assert searched == 1  # the second answer was the first one's
    assert await c.cmd(b"b2 UID SEARCH UNSEEN") == [b"* SEARCH 2 3", b"b2 OK UID SEARCH completed"]
    await env.set_flags(2, ["\\Seen"], event=False)
    assert await c.cmd(b"c SEARCH UNSEEN") == [
        b"* SEARCH 3",
        b"* 2 FETCH (UID 2 FLAGS (\\Seen))",  # the change, as an update after the answer
        b"c OK SEARCH completed",
    ]
    assert await c.cmd(b"d STORE 1 -FLAGS (\\Seen)") == [
        b"* 1 FETCH (FLAGS ())",
        b"d OK STORE completed",
    ]
    assert await c.cmd(b"e SEARCH UNSEEN") == [b"* SEARCH 1 3", b"e OK SEARCH completed"]
    await env.add(env.make_message("fourth"))  # new, unseen: in the answer once announced
    assert await c.cmd(b"f SEARCH UNSEEN") == [
        b"* SEARCH 1 3",
        b"* 4 EXISTS",
        b"* 1 RECENT",
        b"f OK SEARCH completed",
    ]
    assert await c.cmd(b"g SEARCH UNSEEN") == [b"* SEARCH 1 3 4", b"g OK SEARCH completed"]
    await env.expunge_elsewhere([1], event=False)
    # Not reported yet: the message matches nothing, and numbers stay as the client knows them.
    assert await c.cmd(b"h SEARCH UNSEEN") == [b"* SEARCH 3 4", b"h OK SEARCH completed"]
    assert await c.cmd(b"i NOOP") == [b"* 1 EXPUNGE", b"i OK NOOP completed"]
    assert await c.cmd(b"j SEARCH UNSEEN") == [b"* SEARCH 2 3", b"j OK SEARCH completed"]
    assert await c.cmd(b"k UID SEARCH UNSEEN") == [b"* SEARCH 3 4", b"k OK UID SEARCH completed"]
    c.writer.close()
