"""IMAP4rev1's \\Recent (RFC 3501 §2.3.2, §6.3.1-2, §7.3.2) over the wire: the first session told
of a message has it \\Recent, no other session does; EXAMINE claims nothing; an IMAP4rev2
session neither sees nor claims it. The seed's three INBOX messages were claimed before each
test (store_env.py): only what a test delivers is recent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

from postmesh.imap_gw.backend import Changes, MessageMeta
from postmesh.imap_gw.state import SelectedMailbox

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


def _recent_line(reply: list[bytes]) -> bytes:
    (line,) = [x for x in reply if x.endswith(b" RECENT")]
    return line


async def _select(c: Client, verb: bytes = b"SELECT") -> list[bytes]:
    reply = await c.cmd(b"s " + verb + b" INBOX")
    assert reply[-1].startswith(b"s OK"), reply
    return reply


async def test_the_first_session_to_select_gets_recent_and_no_other(env: Env) -> None:
    await env.deliver("fourth")
    await env.deliver("fifth")
    first, second = await Client.login(env), await Client.login(env)
    assert _recent_line(await _select(first)) == b"* 2 RECENT"
    assert await first.cmd(b"f FETCH 3:5 (FLAGS)") == [
        b"* 3 FETCH (FLAGS (\\Flagged))",
        b"* 4 FETCH (FLAGS (\\Recent))",
        b"* 5 FETCH (FLAGS (\\Recent))",
        b"f OK FETCH completed",
    ]
    # A flag change keeps the session flag; the client cannot set or clear it itself.
    assert await first.cmd(b"t STORE 4 +FLAGS (\\Seen)") == [
        b"* 4 FETCH (FLAGS (\\Seen \\Recent))",
        b"t OK STORE completed",
    ]
    assert (await first.cmd(b"u STORE 4 -FLAGS (\\Recent)"))[-1].startswith(b"u BAD ")
    # RECENT, NEW (recent and unseen) and OLD.
    assert await first.cmd(b"k SEARCH RECENT") == [b"* SEARCH 4 5", b"k OK SEARCH completed"]
    assert await first.cmd(b"k SEARCH NEW") == [b"* SEARCH 5", b"k OK SEARCH completed"]
    assert await first.cmd(b"k SEARCH OLD") == [b"* SEARCH 1 2 3", b"k OK SEARCH completed"]
    # Through the store's search too (BODY is not answered from the session's model).
    assert await first.cmd(b"k SEARCH RECENT BODY Hello") == [
        b"* SEARCH 4 5",
        b"k OK SEARCH completed",
    ]
    # The second session comes after: nothing is recent for it.
    assert _recent_line(await _select(second)) == b"* 0 RECENT"
    assert await second.cmd(b"f FETCH 5 (FLAGS)") == [
        b"* 5 FETCH (FLAGS ())",
        b"f OK FETCH completed",
    ]
    assert await second.cmd(b"k SEARCH RECENT") == [b"* SEARCH", b"k OK SEARCH completed"]
    await first.close()
    await second.close()


async def test_new_mail_is_recent_for_the_session_told_of_it_first(env: Env) -> None:
    first, second = await Client.selected(env), await Client.selected(env)
    await env.deliver("fourth")
    # RFC 3501 §7.3.2: RECENT follows EXISTS when the number of recent messages changed.
    assert await first.cmd(b"n NOOP") == [b"* 4 EXISTS", b"* 1 RECENT", b"n OK NOOP completed"]
    assert await second.cmd(b"n NOOP") == [b"* 4 EXISTS", b"n OK NOOP completed"]
    assert (await first.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS (\\Recent))"
    assert (await second.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS ())"
    # Reselected, it is no longer recent even for the first (it was told of it before).
    assert _recent_line(await _select(first)) == b"* 0 RECENT"
    await first.close()
    await second.close()


async def test_examine_claims_nothing(env: Env) -> None:
    """RFC 3501 §6.3.2: EXAMINE "MUST NOT cause messages to lose the \\Recent flag"."""
    await env.deliver("fourth")
    examiner = await Client.login(env)
    assert _recent_line(await _select(examiner, b"EXAMINE")) == b"* 1 RECENT"
    assert (await examiner.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS (\\Recent))"
    # Mail arriving during EXAMINE is recent there too, and still for whoever selects it.
    await env.deliver("fifth")
    assert await examiner.cmd(b"n NOOP") == [
        b"* 5 EXISTS",
        b"* 2 RECENT",
        b"n OK NOOP completed",
    ]
    selector = await Client.login(env)
    assert _recent_line(await _select(selector)) == b"* 2 RECENT"
    await examiner.close()
    await selector.close()


async def test_status_recent_counts_what_nobody_claimed(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"a STATUS INBOX (RECENT MESSAGES)") == [
        b'* STATUS "INBOX" (RECENT 0 MESSAGES 3)',
        b"a OK STATUS completed",
    ]
    await env.deliver("fourth")
    await env.deliver("fifth")
    await env.expunge_elsewhere([5])
    assert await c.cmd(b"b STATUS INBOX (RECENT)") == [
        b'* STATUS "INBOX" (RECENT 1)',
        b"b OK STATUS completed",
    ]
    other = await Client.selected(env)
    assert await c.cmd(b"c STATUS INBOX (RECENT)") == [
        b'* STATUS "INBOX" (RECENT 0)',
        b"c OK STATUS completed",
    ]
    await c.close()
    await other.close()


async def test_an_imap4rev2_session_neither_sees_nor_claims_recent(env: Env) -> None:
    await env.deliver("fourth")
    rev2 = await Client.login(env)
    assert await rev2.cmd(b"e ENABLE IMAP4rev2") == [
        b"* ENABLED IMAP4rev2",
        b"e OK ENABLE completed",
    ]
    reply = await _select(rev2)
    assert not [x for x in reply if b"RECENT" in x]
    assert (await rev2.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS ())"
    await env.deliver("fifth")
    assert await rev2.cmd(b"n NOOP") == [b"* 5 EXISTS", b"n OK NOOP completed"]
    # Both are still recent for an IMAP4rev1 session.
    rev1 = await Client.login(env)
    assert _recent_line(await _select(rev1)) == b"* 2 RECENT"
    await rev2.close()
    await rev1.close()


async def test_append_into_the_selected_mailbox_is_recent_there(env: Env) -> None:
    """RFC 3501 §6.3.11: "the \\Recent flag is also set"; the appending session, which has the
    mailbox selected, is the first told of the message (as Dovecot: EXISTS, then RECENT)."""
    msg = env.make_message("appended")
    c = await Client.selected(env)
    await c.send(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    assert await c.line() == b"* 4 EXISTS"
    assert await c.line() == b"* 1 RECENT"
    assert (await c.line()).startswith(b"a OK [APPENDUID ")
    assert (await c.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS (\\Recent))"
    # No other session gets it; APPEND to a mailbox not selected claims nothing.
    other = await Client.selected(env)
    assert (await other.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS ())"
    await c.send(b"b APPEND Sent {%d+}\r\n" % len(msg) + msg)
    assert (await c.line()).startswith(b"b OK [APPENDUID ")
    sent = await Client.login(env)
    reply = await sent.cmd(b"s SELECT Sent")
    assert b"* 1 RECENT" in reply
    for client in (c, other, sent):
        await client.close()


async def test_examine_shows_new_mail_as_recent_only_while_nobody_claimed_it(env: Env) -> None:
    """As Dovecot: an EXAMINE session learning of a new message after a SELECT session claimed
    it does not show it as recent; one it learns of first, it does."""
    examiner, selector = await Client.login(env), await Client.selected(env)
    assert _recent_line(await _select(examiner, b"EXAMINE")) == b"* 0 RECENT"
    await env.deliver("fourth")
    assert (await selector.cmd(b"n NOOP"))[:2] == [b"* 4 EXISTS", b"* 1 RECENT"]
    assert await examiner.cmd(b"n NOOP") == [b"* 4 EXISTS", b"n OK NOOP completed"]
    assert (await examiner.cmd(b"f FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (FLAGS ())"
    await env.deliver("fifth")
    assert await examiner.cmd(b"n NOOP") == [
        b"* 5 EXISTS",
        b"* 1 RECENT",
        b"n OK NOOP completed",
    ]
    assert (await examiner.cmd(b"f FETCH 5 (FLAGS)"))[0] == b"* 5 FETCH (FLAGS (\\Recent))"
    await examiner.close()
    await selector.close()


def test_two_looks_before_an_exists_count_each_message_once() -> None:
    """A read-only session may learn of new mail twice before it tells the client (a forced
    resynchronisation, then an event): nobody claimed message 4 either time, and it is one
    recent message, not two."""
    sel = SelectedMailbox("INBOX", 1, readonly=True, uidnext=4, highestmodseq=4)
    sel.watches_recent = True
    sel.claimed(4, 3)  # EXAMINE: nothing unclaimed yet
    sel.apply_changes(Changes([MessageMeta(4, (), 100, 0, 5)], [], 5))
    sel.claimed(4, 4)
    sel.apply_changes(Changes([MessageMeta(5, (), 100, 0, 6)], [], 6))
    sel.claimed(4, 5)  # still unclaimed from 4 on
    assert sel.take_new() == 2
    assert sel.recent_count() == 2
    assert [i for a, b in sel.recent_positions() for i in range(a, b + 1)] == [0, 1]
