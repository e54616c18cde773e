"""CONDSTORE and QRESYNC (RFC 7162): ENABLE, SELECT parameters, HIGHESTMODSEQ, MODSEQ in FETCH
after STORE, UNCHANGEDSINCE with [MODIFIED], VANISHED."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_select_condstore_and_store_modseq(env: Env) -> None:
    c = await Client.login(env)
    reply = await c.cmd(b"s SELECT INBOX (CONDSTORE)")
    # The store gives a new mailbox MODSEQ 1: the seed's messages have 2, 3 and 4.
    assert b"* OK [HIGHESTMODSEQ 4] Highest" in reply
    assert (
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted"
        in reply
    )
    assert b"* OK [UIDNEXT 4] Predicted next UID" in reply
    assert b"* OK [UNSEEN 2] First unseen" in reply  # IMAP4rev1 client
    assert reply[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert await c.cmd(b"a STORE 2 +FLAGS (\\Seen)") == [
        b"* 2 FETCH (FLAGS (\\Seen) MODSEQ (5))",
        b"a OK STORE completed",
    ]
    # .SILENT still reports the new MODSEQ once CONDSTORE is on (RFC 7162 §3.1.3).
    assert await c.cmd(b"b UID STORE 2 -FLAGS.SILENT (\\Seen)") == [
        b"* 2 FETCH (UID 2 MODSEQ (6))",
        b"b OK STORE completed",
    ]
    c.writer.close()


async def test_unchangedsince_reports_modified(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"s SELECT INBOX")
    # Message 1 has MODSEQ 2, message 3 MODSEQ 4: only 1 may change under UNCHANGEDSINCE 3.
    assert await c.cmd(b"a STORE 1,3 (UNCHANGEDSINCE 3) +FLAGS (\\Answered)") == [
        b"* 1 FETCH (FLAGS (\\Answered \\Seen) MODSEQ (5))",
        b"a OK [MODIFIED 3] Conditional STORE failed",
    ]
    # UNCHANGEDSINCE 0 always fails (RFC 7162 §3.1.3).
    assert await c.cmd(b"b UID STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)") == [
        b"b OK [MODIFIED 1:3] Conditional STORE failed"
    ]
    c.writer.close()


async def test_enable_and_qresync_select(env: Env) -> None:
    c = await Client.login(env)
    assert (await c.cmd(b"s0 SELECT INBOX (QRESYNC (1234 1))"))[-1].startswith(b"s0 BAD ")
    assert await c.cmd(b"e ENABLE QRESYNC UTF8=ACCEPT") == [
        b"* ENABLED UTF8=ACCEPT QRESYNC",
        b"e OK ENABLE completed",
    ]
    await env.expunge_elsewhere([1])  # MODSEQ 5 (\\Deleted) and 6
    await env.set_flags(3, ["\\Seen"])  # MODSEQ 7
    uidvalidity = await env.uidvalidity()
    reply = await c.cmd(b"s SELECT INBOX (QRESYNC (%d 4 1:3))" % uidvalidity)
    assert b"* VANISHED (EARLIER) 1" in reply
    assert b"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (7))" in reply
    assert b"* 2 EXISTS" in reply
    # Under QRESYNC, expunges are VANISHED (RFC 7162 §3.2.10).
    await c.cmd(b"a STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert await c.cmd(b"b EXPUNGE") == [b"* VANISHED 2", b"b OK EXPUNGE completed"]
    c.writer.close()


async def test_select_parameter_errors(env: Env) -> None:
    c = await Client.login(env)
    for command in (
        b"a SELECT INBOX (FROB)",
        b"a SELECT INBOX (CONDSTORE CONDSTORE)",
        b"a SELECT INBOX ()",
        b"a SELECT INBOX (CONDSTORE",
        b"a EXAMINE INBOX (QRESYNC)",
    ):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (command, reply)
    await c.cmd(b"e ENABLE QRESYNC")
    for command in (
        b"a SELECT INBOX (QRESYNC (0 1))",
        b"a SELECT INBOX (QRESYNC (1234 0))",
        b"a SELECT INBOX (QRESYNC (1234 1 1:*))",
        b"a SELECT INBOX (QRESYNC (1234 1 1:3 (1:2 1:3)))",
    ):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (command, reply)
    c.writer.close()


async def test_capabilities_advertised(env: Env) -> None:
    c = await Client.login(env)
    caps = (await c.cmd(b"c CAPABILITY"))[0].split()
    for cap in (b"IDLE", b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"UTF8=ACCEPT", b"UNSELECT"):
        assert cap in caps
    c.writer.close()
