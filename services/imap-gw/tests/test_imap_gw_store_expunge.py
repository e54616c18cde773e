"""STORE / UID STORE, EXPUNGE / UID EXPUNGE, CLOSE over the wire, with exact sequence numbers
(RFC 9051 §6.4.3, §6.4.6, §7.5.1; RFC 4315), and two sessions on one mailbox; against the
real store in-process (store_env), so the flags and expunges are the store's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_store_flags_silent_uid_and_new_keyword(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"a STORE 1 +FLAGS (\\Deleted)") == [
        b"* 1 FETCH (FLAGS (\\Deleted \\Seen))",
        b"a OK STORE completed",
    ]
    assert await c.cmd(b"b STORE 1 -FLAGS.SILENT \\Deleted") == [b"b OK STORE completed"]
    assert await c.cmd(b"c UID STORE 2:3 FLAGS ($Label1)") == [
        b"* 2 FETCH (UID 2 FLAGS ($Label1))",
        b"* 3 FETCH (UID 3 FLAGS ($Label1))",
        # A keyword the client has not seen in FLAGS yet (RFC 9051 §7.3.5).
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)",
        b"c OK STORE completed",
    ]
    assert await env.flags(3) == ("$Label1",)
    assert await c.cmd(b"d UID STORE 99 +FLAGS (\\Seen)") == [b"d OK STORE completed"]
    await c.close()


async def test_store_bad_input(env: Env) -> None:
    c = await Client.selected(env)
    for command in (
        b"a STORE 1 +FLAGS (\\Recent)",  # the server's flag (RFC 3501 §2.3.2)
        b"a STORE 1 +FLAGS (\\Bogus)",
        b"a STORE 1 FLAGZ (\\Seen)",
        b"a STORE 1 +FLAGS (\\Seen",
        b"a STORE 1 +FLAGS",
        b"a STORE 9 +FLAGS (\\Seen)",  # beyond EXISTS
        b"a STORE 1 (UNCHANGEDSINCE x) +FLAGS (\\Seen)",
        b"a STORE 1 (UNCHANGEDSINCE 5 +FLAGS (\\Seen)",
        b"a STORE 1 (FROB 5) +FLAGS (\\Seen)",
        b"a STORE 1 (UNCHANGEDSINCE 99999999999999999999) +FLAGS (\\Seen)",
    ):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (command, reply)
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    await c.close()


async def test_store_and_expunge_refused_read_only(env: Env) -> None:
    c = await Client.selected(env, "EXAMINE")
    assert (await c.cmd(b"a STORE 1 +FLAGS (\\Seen)"))[-1].startswith(b"a NO [READ-ONLY]")
    assert (await c.cmd(b"b EXPUNGE"))[-1].startswith(b"b NO [READ-ONLY]")
    await c.close()


async def test_expunge_numbers_count_the_previous_ones(env: Env) -> None:
    await env.add(env.make_message("fourth"))
    await env.add(env.make_message("fifth"))
    c = await Client.selected(env)
    await c.cmd(b"a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    # Messages 2 and 4 of 5: after "2 EXPUNGE", the old 4 is number 3 (RFC 9051 §7.5.1).
    assert await c.cmd(b"b EXPUNGE") == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"b OK EXPUNGE completed"]
    assert await c.cmd(b"c FETCH 3 (UID)") == [b"* 3 FETCH (UID 5)", b"c OK FETCH completed"]
    assert await env.uids() == [1, 3, 5]
    await c.close()


async def test_uid_expunge_only_the_given_uids(env: Env) -> None:
    c = await Client.selected(env)
    await c.cmd(b"a STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    assert await c.cmd(b"b UID EXPUNGE 3:10") == [b"* 3 EXPUNGE", b"b OK UID EXPUNGE completed"]
    assert await env.uids() == [1, 2]
    assert (await c.cmd(b"c UID EXPUNGE"))[-1].startswith(b"c BAD ")
    assert (await c.cmd(b"d EXPUNGE 1"))[-1].startswith(b"d BAD ")
    await c.close()


async def test_close_expunges_silently(env: Env) -> None:
    c = await Client.selected(env)
    await c.cmd(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert await c.cmd(b"b CLOSE") == [b"b OK CLOSE completed"]
    assert await env.uids() == [2, 3]
    assert (await c.cmd(b"c FETCH 1 (UID)"))[-1].startswith(b"c BAD ")
    await c.close()


async def test_two_sessions_expunge_waits_for_an_allowed_command(env: Env) -> None:
    one = await Client.selected(env)
    two = await Client.selected(env)
    await one.cmd(b"a STORE 1 +FLAGS.SILENT (\\Flagged)")
    # The other session's NOOP reports the flag change (RFC 9051 §5.2), with the UID.
    assert await two.cmd(b"n1 NOOP") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Seen))",
        b"n1 OK NOOP completed",
    ]
    await one.cmd(b"b STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert await one.cmd(b"c EXPUNGE") == [b"* 2 EXPUNGE", b"c OK EXPUNGE completed"]
    # No EXPUNGE while answering FETCH, STORE or SEARCH (RFC 9051 §7.5.1): numbers stay put.
    reply = await two.cmd(b"f FETCH 3 (UID)")
    assert reply == [b"* 3 FETCH (UID 3)", b"f OK FETCH completed"]
    reply = await two.cmd(b"s STORE 3 +FLAGS (\\Seen)")
    assert reply == [b"* 3 FETCH (FLAGS (\\Flagged \\Seen))", b"s OK STORE completed"]
    assert await two.cmd(b"n2 NOOP") == [b"* 2 EXPUNGE", b"n2 OK NOOP completed"]
    assert await two.cmd(b"g FETCH 2 (UID)") == [b"* 2 FETCH (UID 3)", b"g OK FETCH completed"]
    await one.close()
    await two.close()


async def test_uid_command_may_report_expunges(env: Env) -> None:
    one = await Client.selected(env)
    two = await Client.selected(env)
    await one.cmd(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
    await one.cmd(b"b EXPUNGE")
    # UID FETCH is another command than FETCH: EXPUNGE may go out (RFC 9051 §7.5.1 note),
    # after the FETCH data, whose number is still the one the client knows.
    assert await two.cmd(b"u UID FETCH 3 (FLAGS)") == [
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged))",
        b"* 1 EXPUNGE",
        b"u OK FETCH completed",
    ]
    await one.close()
    await two.close()
