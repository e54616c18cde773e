"""IMAP4rev1's \\Recent (RFC 3501 §2.3.2, §6.3.1-2, §7.3.2) over the wire: the first session told
of a message has it \\Recent, no other session does; EXAMINE claims nothing; an IMAP4rev2
session neither sees nor claims it. The seed's three INBOX messages were claimed before each
test (store_env.py): only what a test delivers is recent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

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
