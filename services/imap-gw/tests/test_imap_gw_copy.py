"""COPY / UID COPY (RFC 9051 §6.4.7), MOVE / UID MOVE (RFC 6851) and COPYUID (RFC 4315 §3)
over the wire: response codes, exact sequence numbers, and every bad input answered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def _flags(env: Env, mailbox: str) -> list[tuple[str, ...]]:
    return [m.flags for m in await env.store.messages(env.user, mailbox)]


async def test_copy_keeps_flags_and_answers_copyuid(env: Env) -> None:
    sent, archive = await env.uidvalidity("Sent"), await env.uidvalidity("Archive/2024")
    c = await Client.selected(env)
    assert await c.cmd(b"a COPY 1:2 Sent") == [b"a OK [COPYUID %d 1:2 1:2] COPY completed" % sent]
    assert await _flags(env, "Sent") == [("\\Seen",), ()]
    # Source UIDs in ascending order, paired with the new UIDs (RFC 4315 §3).
    assert await c.cmd(b"b UID COPY 3,1 Archive/2024") == [
        b"b OK [COPYUID %d 1,3 1:2] UID COPY completed" % archive
    ]
    assert await c.cmd(b"c UID COPY 2:* Sent") == [
        b"c OK [COPYUID %d 2:3 3:4] UID COPY completed" % sent
    ]
    # The source is unchanged.
    assert await env.uids() == [1, 2, 3]
    await c.close()


async def test_copy_to_the_selected_mailbox_announces_exists(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"a COPY 1:3 INBOX") == [
        b"* 6 EXISTS",
        b"* 3 RECENT",  # the copies are new here (RFC 3501 §6.4.7), and this session saw them
        b"a OK [COPYUID %d 1:3 4:6] COPY completed" % await env.uidvalidity(),
    ]
    await c.close()


async def test_copy_to_a_missing_mailbox_is_trycreate(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"a COPY 1 Nowhere") == [b"a NO [TRYCREATE] Mailbox does not exist: Nowhere"]
    assert await c.cmd(b"b MOVE 1 Nowhere") == [b"b NO [TRYCREATE] Mailbox does not exist: Nowhere"]
    # No message named, but the destination is still checked.
    assert await c.cmd(b"c UID COPY 99 Nowhere") == [
        b"c NO [TRYCREATE] Mailbox does not exist: Nowhere"
    ]
    assert await c.cmd(b"d UID COPY 99 Sent") == [b"d OK COPY completed (no messages)"]
    assert await env.uids() == [1, 2, 3]
    await c.close()


async def test_move_sends_copyuid_then_expunge(env: Env) -> None:
    sent, archive = await env.uidvalidity("Sent"), await env.uidvalidity("Archive/2024")
    c = await Client.selected(env)
    assert await c.cmd(b"a MOVE 2 Sent") == [
        b"* OK [COPYUID %d 2 1] Moved" % sent,
        b"* 2 EXPUNGE",
        b"a OK MOVE completed",
    ]
    assert await env.uids() == [1, 3]
    assert await env.uids("Sent") == [1]
    # The former message 3 is now 2; every EXPUNGE counts the ones before it.
    assert await c.cmd(b"b UID MOVE 1:* Archive/2024") == [
        b"* OK [COPYUID %d 1,3 1:2] Moved" % archive,
        b"* 1 EXPUNGE",
        b"* 1 EXPUNGE",
        b"b OK UID MOVE completed",
    ]
    assert await env.uids() == []
    assert await c.cmd(b"c FETCH 1 FLAGS")  # nothing left: a BAD, and the session goes on
    assert await c.cmd(b"d NOOP") == [b"d OK NOOP completed"]
    await c.close()


async def test_move_under_qresync_reports_vanished(env: Env) -> None:
    c = await Client.login(env)
    assert (await c.cmd(b"e ENABLE QRESYNC"))[-1] == b"e OK ENABLE completed"
    assert (await c.cmd(b"s SELECT INBOX"))[-1].startswith(b"s OK")
    assert await c.cmd(b"a MOVE 1:2 Sent") == [
        b"* OK [COPYUID %d 1:2 1:2] Moved" % await env.uidvalidity("Sent"),
        b"* VANISHED 1:2",
        b"a OK MOVE completed",
    ]
    await c.close()


async def test_move_is_seen_by_another_session(env: Env) -> None:
    a = await Client.selected(env)
    b = await Client.selected(env)
    assert (await a.cmd(b"a MOVE 1 Sent"))[-1] == b"a OK MOVE completed"
    assert await b.cmd(b"b NOOP") == [b"* 1 EXPUNGE", b"b OK NOOP completed"]
    await a.close()
    await b.close()


async def test_read_only_mailbox_copies_but_does_not_move(env: Env) -> None:
    c = await Client.selected(env, "EXAMINE")
    assert await c.cmd(b"a MOVE 1 Sent") == [b"a NO [READ-ONLY] Mailbox is read-only (EXAMINE)"]
    assert await c.cmd(b"b COPY 1 Sent") == [
        b"b OK [COPYUID %d 1 1] COPY completed" % await env.uidvalidity("Sent")
    ]
    assert await env.uids() == [1, 2, 3]
    await c.close()


async def test_message_expunged_elsewhere_is_expungeissued(env: Env) -> None:
    c = await Client.selected(env)
    await env.expunge_elsewhere([2])
    # The client still sees message 2; the others are copied and it is told why not all.
    assert await c.cmd(b"a COPY 1:3 Sent") == [
        b"* NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
        b"* 2 EXPUNGE",
        b"a OK [COPYUID %d 1,3 1:2] COPY completed" % await env.uidvalidity("Sent"),
    ]
    await env.expunge_elsewhere([3])
    assert await c.cmd(b"b UID MOVE 3 Sent") == [
        b"* 2 EXPUNGE",
        b"b NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
    ]
    await c.close()


async def test_known_expunged_message_is_not_sent_to_the_store(env: Env) -> None:
    c = await Client.selected(env)
    await env.expunge_elsewhere([1])
    # FETCH may not report the EXPUNGE (RFC 9051 §7.5.1), so message 1 stays in the client's
    # view while the session knows it is gone.
    assert (await c.cmd(b"f FETCH 2 FLAGS"))[-1] == b"f OK FETCH completed"
    env.mail.calls.clear()
    assert await c.cmd(b"a COPY 1 Sent") == [
        b"* 1 EXPUNGE",
        b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
    ]
    assert not [call for call in env.mail.calls if call[0] == "copy_messages"]
    await c.close()


async def test_copy_over_quota(env: Env) -> None:
    # A storage limit of what the user has now: nothing more fits.
    await env.set_quota(sum(m.size for m in await env.store.messages(env.user)), 0)
    c = await Client.selected(env)
    assert await c.cmd(b"a COPY 1 Sent") == [b"a NO [OVERQUOTA] Quota exceeded"]
    # A move does not add to the usage.
    assert (await c.cmd(b"b MOVE 1 Sent"))[-1] == b"b OK MOVE completed"
    await c.close()


async def test_copy_and_move_bad_input(env: Env) -> None:
    c = await Client.selected(env)
    for command in (
        b"a COPY",
        b"a COPY 1",
        b"a COPY 1 ",
        b"a COPY x Sent",
        b"a COPY 1: Sent",
        b"a COPY 0 Sent",
        b"a COPY 9 Sent",  # beyond EXISTS
        b"a COPY 1 Sent extra",
        b'a COPY 1 "Sent',
        b"a MOVE 1,,2 Sent",
        b"a UID MOVE * ",
        b"a UID COPY 1 (Sent)",
        b"a COPY 1 &Jjo",  # broken modified UTF-7
    ):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (command, reply)
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    await c.close()


async def test_copy_and_move_in_the_wrong_state(env: Env) -> None:
    c = await Client.connect(env)
    assert await c.cmd(b"a COPY 1 Sent") == [b"a BAD Log in first"]
    await c.close()
    c = await Client.login(env)
    assert await c.cmd(b"b MOVE 1 Sent") == [b"b BAD No mailbox selected"]
    assert await c.cmd(b"c UID COPY 1 Sent") == [b"c BAD No mailbox selected"]
    caps = (await c.cmd(b"f CAPABILITY"))[0].split()
    assert b"MOVE" in caps and b"UIDPLUS" in caps
    await c.close()


async def test_store_unavailable(env: Env) -> None:
    c = await Client.selected(env)
    env.mail.down = True
    assert await c.cmd(b"a COPY 1 Sent") == [
        b"a NO [UNAVAILABLE] Temporary server failure, try again later"
    ]
    await c.close()
