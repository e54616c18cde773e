"""APPEND over the wire (RFC 9051 §6.3.12): flags, date-time, synchronizing and
non-synchronizing literals (RFC 7888), APPENDUID (RFC 4315), TRYCREATE, TOOBIG, OVERQUOTA
(RFC 9208), binary (RFC 3516) and UTF8 (RFC 6855) data, the message streamed to the store, and
every bad input."""

from __future__ import annotations

import asyncio
import calendar
import imaplib
from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

MSG = b"From: a@example.org\r\nSubject: appended\r\n\r\nHi.\r\n"


async def _box(env: Env, name: str) -> dict[int, bytes]:
    """The mailbox's messages by UID, their content as stored."""
    return {uid: await env.content(uid, name) for uid in await env.uids(name)}


async def _append_sync(c: Client, head: bytes, data: bytes, tail: bytes = b"") -> list[bytes]:
    """Send ``head {n}``, wait for "+", send the data; the replies up to the tagged one."""
    tag = head.split(b" ", 1)[0]
    await c.send(head + b" {%d}" % len(data))
    assert await c.line() == b"+ Ready for literal data"
    await c.send(data + tail)
    out = []
    while not (line := await c.line()).startswith(tag + b" "):
        out.append(line)
    return [*out, line]


async def test_append_with_flags_and_date(env: Env) -> None:
    sent = await env.uidvalidity("Sent")
    c = await Client.login(env)
    head = b'a APPEND Sent (\\Seen $Work) "05-Dec-2026 10:00:00 +0100"'
    assert await _append_sync(c, head, MSG) == [b"a OK [APPENDUID %d 1] APPEND completed" % sent]
    meta = await env.message(1, "Sent")
    assert await env.content(1, "Sent") == MSG
    assert set(meta.flags) == {"\\Seen", "$Work"}
    assert meta.internal_date == calendar.timegm((2026, 12, 5, 9, 0, 0))
    # A day of one digit is written with a leading space (date-day-fixed).
    head = b'b APPEND Sent () " 5-Dec-2026 10:00:00 -0000"'
    assert await _append_sync(c, head, MSG) == [b"b OK [APPENDUID %d 2] APPEND completed" % sent]
    assert await env.flags(2, "Sent") == ()
    await c.close()


async def test_append_non_synchronizing_and_pipelined(env: Env) -> None:
    sent = await env.uidvalidity("Sent")
    c = await Client.login(env)
    await c.send(b"a APPEND Sent {%d+}\r\n" % len(MSG) + MSG + b"\r\nb NOOP")
    assert await c.line() == b"a OK [APPENDUID %d 1] APPEND completed" % sent
    assert await c.line() == b"b OK NOOP completed"
    # The mailbox name itself as a literal, then the message.
    await c.send(b"c APPEND {4+}\r\nSent {%d+}\r\n" % len(MSG) + MSG)
    assert await c.line() == b"c OK [APPENDUID %d 2] APPEND completed" % sent
    await c.close()


async def test_append_to_the_selected_mailbox_announces_exists(env: Env) -> None:
    c = await Client.selected(env)
    assert await _append_sync(c, b"a APPEND INBOX", MSG) == [
        b"* 4 EXISTS",
        b"* 1 RECENT",  # APPEND sets \Recent (RFC 3501 §6.3.11), here for this session
        b"a OK [APPENDUID %d 4] APPEND completed" % await env.uidvalidity(),
    ]
    assert (await c.cmd(b"f UID FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (UID 4 FLAGS (\\Recent))"
    await c.close()


async def test_bare_lf_is_stored_as_crlf(env: Env) -> None:
    """What ``imaplib.append(..., msg.as_bytes())`` sends: LF line ends. Stored with CRLF
    (RFC 5322 §2.1), so FETCH, RFC822.SIZE and POP3 see one message (as Dovecot shows it); a
    literal8 is binary and kept as sent (test_binary_append below)."""
    lf = b"From: a@example.org\nSubject: lf\n\nline one\nline two\n"
    c = await Client.login(env)
    sent = await env.uidvalidity("Sent")
    assert await _append_sync(c, b"a APPEND Sent", lf) == [
        b"a OK [APPENDUID %d 1] APPEND completed" % sent
    ]
    crlf = lf.replace(b"\n", b"\r\n")
    assert await env.content(1, "Sent") == crlf
    assert (await env.message(1, "Sent")).size == len(crlf)
    await c.close()


async def test_append_is_streamed_in_chunks(env: Env) -> None:
    # Larger than the literal and command limits (64 KiB, 1 MiB): APPEND's message is not a
    # literal held in memory, it goes to the store chunk by chunk.
    big = b"Subject: big\r\n\r\n" + b"x" * (1500 * 1024) + b"\r\n"
    c = await Client.login(env)
    assert await _append_sync(c, b"a APPEND Sent", big) == [
        b"a OK [APPENDUID %d 1] APPEND completed" % await env.uidvalidity("Sent")
    ]
    chunks = env.mail.made("append_chunks")[0]
    assert isinstance(chunks, tuple) and sum(chunks) == len(big)
    assert len(chunks) > 1 and max(chunks) <= 256 * 1024
    assert (await _box(env, "Sent"))[1] == big
    await c.close()


async def test_append_to_a_missing_mailbox_is_trycreate(env: Env) -> None:
    c = await Client.login(env)
    # Refused before the "+": the client does not send the message.
    await c.send(b"a APPEND Nowhere {5}")
    assert await c.line() == b"a NO [TRYCREATE] Mailbox does not exist: Nowhere"
    # LITERAL+: the data arrives anyway and is dropped.
    await c.send(b"b APPEND Nowhere {5+}\r\nhello\r\nc NOOP")
    assert await c.line() == b"b NO [TRYCREATE] Mailbox does not exist: Nowhere"
    assert await c.line() == b"c OK NOOP completed"
    await c.close()


async def test_append_again_skips_the_mailbox_check(env: Env) -> None:
    """The mailbox the session last appended to is not looked up again before the "+"; if it
    was deleted meanwhile, the store's Append refuses it with TRYCREATE after the upload."""
    c = await Client.login(env)
    assert (await _append_sync(c, b"a APPEND Sent", MSG))[-1].startswith(b"a OK [APPENDUID")
    asked = len(env.mail.made("get_mailbox"))
    assert (await _append_sync(c, b"b APPEND Sent", MSG))[-1].startswith(b"b OK [APPENDUID")
    assert len(env.mail.made("get_mailbox")) == asked
    await env.store.app.repo.delete_mailbox(env.user, "Sent")
    # The store's Append refuses it, before or after taking the data.
    await c.send(b"c APPEND Sent {%d}" % len(MSG))
    line = await c.line()
    if line == b"+ Ready for literal data":
        await c.send(MSG)
        line = await c.line()
    assert line == b"c NO [TRYCREATE] Mailbox does not exist: Sent"
    # Not known any more: refused before the "+" again.
    await c.send(b"d APPEND Sent {5}")
    assert await c.line() == b"d NO [TRYCREATE] Mailbox does not exist: Sent"
    await c.close()


async def test_append_too_large(make_env: object) -> None:
    env = await make_env(imap_max_message_bytes=2048)  # type: ignore[operator]
    c = await Client.login(env)
    caps = (await c.cmd(b"x CAPABILITY"))[0].split()
    assert b"APPENDLIMIT=2048" in caps
    await c.send(b"a APPEND INBOX {2049}")
    assert await c.line() == b"a NO [TOOBIG] Message too large (the limit is 2048 octets)"
    assert await c.cmd(b"b NOOP") == [b"b OK NOOP completed"]
    # Exactly the limit is fine.
    msg = b"Subject: x\r\n\r\n" + b"y" * (2048 - 16) + b"\r\n"
    assert (await _append_sync(c, b"c APPEND INBOX", msg))[-1].startswith(b"c OK [APPENDUID")
    # LITERAL+ over the limit: the data is coming anyway, so the session ends.
    await c.send(b"d APPEND INBOX {99999+}")
    assert await c.line() == b"* BYE [TOOBIG] Literal too large"
    assert await asyncio.wait_for(c.reader.read(), 5) == b""


async def test_append_over_quota(env: Env) -> None:
    # A storage limit of what the user has now: nothing more fits.
    await env.set_quota(sum(m.size for m in await env.store.messages(env.user)), 0)
    c = await Client.login(env)
    await c.send(b"a APPEND Sent {%d}" % len(MSG))
    # The store refuses at Append's header, but the session has asked for the message by then
    # (only mailbox, size and state are checked before the "+"): the refusal follows the data.
    assert await c.line() == b"+ Ready for literal data"
    await c.send(MSG)
    assert await c.line() == b"a NO [OVERQUOTA] Quota exceeded"
    await c.send(b"b APPEND Sent {%d+}\r\n" % len(MSG) + MSG)
    assert await c.line() == b"b NO [OVERQUOTA] Quota exceeded"
    assert await c.cmd(b"c NOOP") == [b"c OK NOOP completed"]
    assert await _box(env, "Sent") == {}
    await c.close()


async def test_append_utf8_data(env: Env) -> None:
    utf8 = "Subject: Grüße\r\n\r\nÄ\r\n".encode()
    c = await Client.login(env)
    # Not before ENABLE UTF8=ACCEPT (RFC 6855 §4).
    await c.send(b"a APPEND Sent UTF8 (~{%d+}\r\n" % len(utf8) + utf8 + b")")
    assert await c.line() == b"a BAD UTF8 data needs ENABLE UTF8=ACCEPT first"
    assert (await c.cmd(b"e ENABLE UTF8=ACCEPT"))[-1] == b"e OK ENABLE completed"
    head = b"b APPEND Sent UTF8 (~"
    await c.send(head + b"{%d}" % len(utf8))
    assert await c.line() == b"+ Ready for literal data"
    await c.send(utf8 + b")")
    assert await c.line() == b"b OK [APPENDUID %d 1] APPEND completed" % (
        await env.uidvalidity("Sent")
    )
    assert (await _box(env, "Sent"))[1] == utf8
    # The closing parenthesis is required.
    await c.send(b"c APPEND Sent UTF8 (~{%d+}\r\n" % len(utf8) + utf8)
    assert await c.line() == b"c BAD expected ')', found end of command"
    assert len(await _box(env, "Sent")) == 1
    await c.close()


async def test_append_binary_data(env: Env) -> None:
    """A literal8 is the message as sent, NUL and all (RFC 3516 §4.4: BINARY is advertised);
    FETCH BINARY gives the octets back as a literal8, BODY[] with each NUL as 0x80."""
    body = b"ab\x00cd\xff\r\n"
    data = (
        b"From: a@example.org\r\nSubject: binary\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + body
    )
    c = await Client.login(env)
    uidvalidity = await env.uidvalidity("Sent")
    await c.send(b"a APPEND Sent ~{%d}" % len(data))
    assert await c.line() == b"+ Ready for literal data"
    await c.send(data)
    assert await c.line() == b"a OK [APPENDUID %d 1] APPEND completed" % uidvalidity
    await c.send(b"b APPEND Sent (\\Seen) ~{%d+}\r\n" % len(data) + data)
    assert await c.line() == b"b OK [APPENDUID %d 2] APPEND completed" % uidvalidity
    assert await _box(env, "Sent") == {1: data, 2: data}
    assert (await c.cmd(b"c SELECT Sent"))[-1].startswith(b"c OK ")
    assert await c.cmd_literals(b"d FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])") == [
        b"* 1 FETCH (BINARY[1] ~{8}\r\n" + body + b" BINARY.SIZE[1] 8)",
        b"d OK FETCH completed",
    ]
    assert await c.cmd_literals(b"e FETCH 2 BODY.PEEK[TEXT]") == [
        b"* 2 FETCH (BODY[TEXT] {8}\r\nab\x80cd\xff\r\n)",
        b"e OK FETCH completed",
    ]
    await c.close()


async def test_append_bad_input_before_the_literal(env: Env) -> None:
    c = await Client.login(env)
    for head in (
        b"a APPEND INBOX (\\Bogus) {5}",
        b"a APPEND INBOX (\\Recent) {5}",
        b"a APPEND INBOX (\\Seen {5}",
        b"a APPEND INBOX \\Seen {5}",
        b'a APPEND INBOX "32-Jan-2026 10:00:00 +0000" {5}',
        b'a APPEND INBOX "29-Feb-2027 10:00:00 +0000" {5}',
        b'a APPEND INBOX "05-Foo-2026 10:00:00 +0000" {5}',
        b'a APPEND INBOX "5-Dec-2026 10:00:00 +0000" {5}',
        b'a APPEND INBOX "05-Dec-2026 25:00:00 +0000" {5}',
        b'a APPEND INBOX "05-Dec-2026 10:00:00 0000" {5}',
        b'a APPEND INBOX "05-Dec-1960 10:00:00 +0000" {5}',
        b"a APPEND INBOX (\\Seen) (\\Seen) {5}",
        b"a APPEND INBOX ~~{5}",
        b"a APPEND INBOX UTF8 {5}",
        b"a APPEND INBOX UTF8 ~{5}",
        b"a APPEND INBOX  {5}",
        b"a APPEND &Jjo {5}",  # broken modified UTF-7
    ):
        # Synchronizing: BAD instead of "+", nothing more is sent for the command.
        await c.send(head)
        reply = await c.line()
        assert reply.startswith(b"a BAD "), (head, reply)
    assert await c.cmd(b"y NOOP") == [b"y OK NOOP completed"]  # (20 BADs in a row end it)
    # Non-synchronizing: the data is read and dropped, then BAD.
    await c.send(b"b APPEND INBOX (\\Bogus) {5+}\r\nhello")
    assert (await c.line()).startswith(b"b BAD unknown system flag")
    for command in (b"c APPEND", b"c APPEND INBOX", b"c APPEND INBOX (\\Seen)", b'c APPEND "IN'):
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"c BAD "), (command, reply)
    await c.send(b"d APPEND INBOX {0}")
    assert await c.line() == b"d NO An empty message cannot be stored"
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    assert len(await env.uids()) == 3
    await c.close()


async def test_append_bad_input_after_the_literal(env: Env) -> None:
    c = await Client.login(env)
    assert await _append_sync(c, b"a APPEND Sent", MSG, b" junk") == [
        b"a BAD MULTIAPPEND (more than one message) is not supported"
    ]
    assert await _append_sync(c, b"b APPEND Sent", MSG, b"junk") == [
        b"b BAD unexpected data after command at position 0, found 'junk'"
    ]
    # A second message (MULTIAPPEND) is read and refused; nothing of the command is stored.
    await c.send(b"c APPEND Sent {5+}\r\nhello (\\Seen) {5+}\r\nworld")
    assert await c.line() == b"c BAD MULTIAPPEND (more than one message) is not supported"
    assert await _box(env, "Sent") == {}
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    await c.close()


async def test_append_in_the_wrong_state(env: Env) -> None:
    c = await Client.connect(env)
    await c.send(b"a APPEND INBOX {5}")
    assert await c.line() == b"a BAD Log in first"
    await c.send(b"b APPEND INBOX {5+}\r\nhello\r\nc NOOP")
    assert await c.line() == b"b BAD Log in first"
    assert await c.line() == b"c OK NOOP completed"
    # Before login a non-synchronizing literal above the literal limit is not swallowed.
    await c.send(b"d APPEND INBOX {999999+}")
    assert await c.line() == b"* BYE [TOOBIG] Literal too large"
    assert len(await env.uids()) == 3


async def test_client_gone_in_the_middle_of_the_message(env: Env) -> None:
    c = await Client.login(env)
    await c.send(b"a APPEND Sent {1000}")
    assert await c.line() == b"+ Ready for literal data"
    c.writer.write(b"Subject: half\r\n\r\n")
    await c.writer.drain()
    await c.close()
    # The server survives and stored nothing.
    d = await Client.login(env)
    assert await d.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    assert await _box(env, "Sent") == {}
    await d.close()


async def test_append_store_unavailable(env: Env) -> None:
    c = await Client.login(env)
    env.mail.down = True
    await c.send(b"a APPEND Sent {5+}\r\nhello\r\nb NOOP")
    assert await c.line() == b"a NO [UNAVAILABLE] Temporary server failure, try again later"
    assert await c.line() == b"b OK NOOP completed"
    await c.close()


async def test_imaplib_append(env: Env) -> None:
    def run() -> tuple[str, list[bytes]]:
        m = imaplib.IMAP4("127.0.0.1", env.port)
        m.login(env.user, env.password)
        typ, data = m.append("Sent", "(\\Flagged)", imaplib.Time2Internaldate(1_750_000_000), MSG)
        m.logout()
        return typ, data

    typ, data = await asyncio.to_thread(run)
    assert typ == "OK" and data[0].startswith(b"[APPENDUID %d 1]" % await env.uidvalidity("Sent"))
    meta = await env.message(1, "Sent")
    assert await env.content(1, "Sent") == MSG and meta.flags == ("\\Flagged",)
    assert meta.internal_date == 1_750_000_000
