"""Raw-socket sessions: malformed and abusive input gets the exact protocol answer, and the
server keeps serving."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


USER = "alice@example.org"
PASSWORD = 's3cret pass\\"word'
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        c = cls(r, w)
        greeting = await c.line()
        assert greeting.startswith(b"* OK [CAPABILITY ")
        return c

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 5)

    async def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = await self.line()
            assert line, f"connection closed before {tag!r}; got {lines!r}"
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def alive(env: Env) -> None:
    """A fresh connection still gets served."""
    c = await Raw.open(env.port)
    await c.send(b"z NOOP\r\n")
    assert await c.line() == b"z OK NOOP completed\r\n"
    await c.close()


async def login(c: Raw) -> None:
    await c.send(b"L AUTHENTICATE PLAIN " + PLAIN + b"\r\n")
    assert (await c.until_tagged(b"L"))[-1].startswith(b"L OK [CAPABILITY ")


async def test_overlong_line_is_refused_and_session_continues(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"a1 NOOP " + b"x" * 70_000 + b"\r\n")
    assert await c.line() == b"a1 BAD [TOOBIG] Command line too long\r\n"
    await c.send(b"\x01" * 70_000 + b"\r\n")
    assert await c.line() == b"* BAD [TOOBIG] Command line too long\r\n"
    await c.send(b"a2 NOOP\r\n")
    assert await c.line() == b"a2 OK NOOP completed\r\n"
    await c.close()


async def test_endless_line_ends_the_session(env: Env) -> None:
    c = await Raw.open(env.port)
    # More than the whole-command limit (1 MiB) without a line end.
    await c.send(b"a" * (1024 * 1024 + 200_000))
    assert await c.line() == b"* BYE [TOOBIG] Command line too long\r\n"
    assert await c.closed()
    await alive(env)


async def test_garbage(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"\x00\xff\xfe garbage\r\n")
    assert await c.line() == b"* BAD Missing or invalid tag\r\n"
    await c.send(b"\r\n")
    assert await c.line() == b"* BAD Missing or invalid tag\r\n"
    await c.send(b"g1 FROB x\r\n")
    assert await c.line() == b"g1 BAD unknown command 'FROB'\r\n"
    await c.send(b'g2 LOGIN "unterminated\r\n')
    assert await c.line() == b"g2 BAD unterminated quoted string\r\n"
    await c.send(b"g3 noop\n")  # a bare LF ends a line too
    assert await c.line() == b"g3 OK NOOP completed\r\n"
    await c.close()
    await alive(env)


async def test_synchronizing_literals(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"s1 LOGIN {%d}\r\n" % len(USER))
    assert await c.line() == b"+ Ready for literal data\r\n"
    await c.send(USER.encode() + b" {%d}\r\n" % len(PASSWORD))
    assert await c.line() == b"+ Ready for literal data\r\n"
    await c.send(PASSWORD.encode() + b"\r\n")
    assert (await c.line()).startswith(b"s1 OK [CAPABILITY ")
    await c.close()


async def test_non_synchronizing_literals(env: Env) -> None:
    c = await Raw.open(env.port)
    pw = PASSWORD.encode()
    await c.send(b"n1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(USER), USER.encode(), len(pw), pw))
    assert (await c.line()).startswith(b"n1 OK [CAPABILITY ")
    await c.send(b"n2 SELECT {5+}\r\nINBOX\r\n")
    lines = await c.until_tagged(b"n2")
    assert b"* 3 EXISTS\r\n" in lines and lines[-1] == b"n2 OK [READ-WRITE] SELECT completed\r\n"
    await c.close()


async def test_literal_limits(env: Env) -> None:
    c = await Raw.open(env.port)
    # Synchronizing: refused before the client sends it; no "+".
    await c.send(b"t1 LOGIN {999999}\r\n")
    assert await c.line() == b"t1 BAD [TOOBIG] Literal too large\r\n"
    await c.send(b"t2 NOOP\r\n")
    assert await c.line() == b"t2 OK NOOP completed\r\n"
    # Unknown command with a literal: refused before the literal, too.
    await c.send(b"t3 FROBNICATE INBOX {10}\r\n")
    assert await c.line() == b"t3 BAD Unknown command\r\n"
    # LITERAL+ for an unknown command: the literal is swallowed, then refused.
    await c.send(b"t4 FROBNICATE INBOX {5+}\r\nHello\r\nt5 NOOP\r\n")
    assert await c.line() == b"t4 BAD Unknown command\r\n"
    assert await c.line() == b"t5 OK NOOP completed\r\n"
    # Non-synchronizing and too large: the data is coming anyway, so the session ends.
    await c.send(b"t6 LOGIN {999999+}\r\n")
    assert await c.line() == b"* BYE [TOOBIG] Literal too large\r\n"
    assert await c.closed()
    await alive(env)


async def test_bad_literal_syntax(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"b1 LOGIN {abc}\r\n")
    assert await c.line() == b"b1 BAD expected a literal at position 9, found '{abc}'\r\n"
    await c.send(b"b2 LOGIN {-1}\r\n")
    assert (await c.line()).startswith(b"b2 BAD ")
    await c.close()


async def test_disconnect_mid_literal(env: Env) -> None:
    before = REGISTRY.get_sample_value("postmesh_imap_gw_sessions_active") or 0
    c = await Raw.open(env.port)
    await c.send(b"d1 LOGIN {20}\r\n")
    assert await c.line() == b"+ Ready for literal data\r\n"
    await c.send(b"alice")
    await c.close()
    for _ in range(100):
        if (REGISTRY.get_sample_value("postmesh_imap_gw_sessions_active") or 0) <= before:
            break
        await asyncio.sleep(0.02)
    assert (REGISTRY.get_sample_value("postmesh_imap_gw_sessions_active") or 0) <= before
    await alive(env)


async def test_authenticate_plain_sasl_ir_cancel_and_bad_data(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"p1 AUTHENTICATE PLAIN\r\n")
    assert await c.line() == b"+ \r\n"
    await c.send(b"*\r\n")
    assert await c.line() == b"p1 BAD Authentication cancelled\r\n"
    await c.send(b"p2 AUTHENTICATE PLAIN\r\n")
    assert await c.line() == b"+ \r\n"
    await c.send(b"%%%notbase64\r\n")
    assert await c.line() == b"p2 BAD Invalid SASL PLAIN response: invalid base64 data\r\n"
    await c.send(b"p3 AUTHENTICATE CRAM-MD5\r\n")
    assert await c.line() == b"p3 NO [CANNOT] Unsupported authentication mechanism CRAM-MD5\r\n"
    await c.send(b"p4 AUTHENTICATE PLAIN =\r\n")
    assert await c.line() == (
        b"p4 BAD Invalid SASL PLAIN response: "
        b"PLAIN response must have exactly three NUL-separated fields\r\n"
    )
    await c.send(b"p5 AUTHENTICATE PLAIN " + PLAIN + b"\r\n")
    assert (await c.line()).startswith(b"p5 OK [CAPABILITY IMAP4rev1 ")
    await c.send(b"p6 LOGIN a b\r\n")
    assert await c.line() == b"p6 BAD Already authenticated\r\n"
    await c.close()


async def test_state_rules(env: Env) -> None:
    c = await Raw.open(env.port)
    await c.send(b"s1 SELECT INBOX\r\n")
    assert await c.line() == b"s1 BAD Log in first\r\n"
    await login(c)
    await c.send(b"s2 FETCH 1 FLAGS\r\n")
    assert await c.line() == b"s2 BAD No mailbox selected\r\n"
    await c.send(b"s3 SELECT INBOX\r\n")
    await c.until_tagged(b"s3")
    await c.send(b"s4 ENABLE IMAP4rev2\r\n")
    assert await c.line() == b"s4 BAD ENABLE is only valid before a mailbox is selected\r\n"
    await c.send(b"s5 SELECT Sent\r\n")
    lines = await c.until_tagged(b"s5")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed\r\n"
    assert b"* 0 EXISTS\r\n" in lines
    await c.send(b"s6 FETCH 1:* FLAGS\r\n")
    assert await c.line() == (
        b"s6 BAD [CLIENTBUG] sequence number out of range (mailbox has 0 messages)\r\n"
    )
    await c.send(b"s7 UID FETCH 1:* FLAGS\r\n")
    assert await c.line() == b"s7 OK FETCH completed\r\n"
    await c.close()


async def test_too_many_bad_commands(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(imap_max_bad_commands=3)
    c = await Raw.open(env.port)
    await c.send(b"x1 BOGUS\r\nx2 NOOP\r\n")  # a good command resets the count
    assert await c.line() == b"x1 BAD unknown command 'BOGUS'\r\n"
    assert await c.line() == b"x2 OK NOOP completed\r\n"
    await c.send(b"x3 BOGUS\r\nx4 FETCH\r\n" + b"y" * 70_000 + b"\r\n")
    assert await c.line() == b"x3 BAD unknown command 'BOGUS'\r\n"
    assert await c.line() == b"x4 BAD expected a single space, found end of command\r\n"
    assert await c.line() == b"* BAD [TOOBIG] Command line too long\r\n"
    assert await c.line() == b"* BYE Too many invalid IMAP commands\r\n"
    assert await c.closed()
    await alive(env)


async def test_idle_timeout_logs_out(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(imap_preauth_timeout_seconds=0.2, imap_idle_timeout_seconds=0.4)
    c = await Raw.open(env.port)
    assert await c.line() == b"* BYE Autologout; idle for too long\r\n"
    assert await c.closed()
    c = await Raw.open(env.port)
    await login(c)
    await asyncio.sleep(0.25)  # longer than the pre-login limit: now the idle limit applies
    await c.send(b"i1 NOOP\r\n")
    assert await c.line() == b"i1 OK NOOP completed\r\n"
    assert await c.line() == b"* BYE Autologout; idle for too long\r\n"
    assert await c.closed()


async def test_starttls_drops_pipelined_cleartext(env: Env) -> None:
    c = await Raw.open(env.port)
    # "b NOOP" rides in the same packet as STARTTLS: it must not run as if sent under TLS.
    await c.send(b"a STARTTLS\r\nb NOOP\r\n")
    assert await c.line() == b"a OK Begin TLS negotiation now\r\n"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    await c.writer.start_tls(ctx)
    await c.send(b"c CAPABILITY\r\n")
    lines = await c.until_tagged(b"c")
    assert lines[0].startswith(b"* CAPABILITY ") and b"STARTTLS" not in lines[0]
    assert lines[-1] == b"c OK CAPABILITY completed\r\n" and len(lines) == 2
    await c.send(b"d STARTTLS\r\n")
    assert await c.line() == b"d BAD TLS is already active\r\n"
    await login(c)
    await c.close()


async def test_uid_fetch_missing_and_seq_beyond_exists(env: Env) -> None:
    c = await Raw.open(env.port)
    await login(c)
    await c.send(b"f0 SELECT INBOX\r\n")
    await c.until_tagged(b"f0")
    await c.send(b"f1 UID FETCH 99,100:200 (FLAGS BODY[])\r\n")
    assert await c.line() == b"f1 OK FETCH completed\r\n"
    await c.send(b"f2 FETCH 2:4 FLAGS\r\n")
    assert await c.line() == (
        b"f2 BAD [CLIENTBUG] sequence number out of range (mailbox has 3 messages)\r\n"
    )
    await c.send(b"f3 FETCH 0 FLAGS\r\n")
    assert await c.line() == (
        b"f3 BAD Invalid sequence set: number out of range at position 9, found '0 FLAGS'\r\n"
    )
    await c.send(b"f4 FETCH 3 FAST\r\n")
    size = (await env.message(3)).size
    assert await c.line() == (
        b'* 3 FETCH (FLAGS (\\Flagged) INTERNALDATE "14-Nov-2023 22:13:20 +0000" '
        b"RFC822.SIZE %d)\r\n" % size
    )
    assert await c.line() == b"f4 OK FETCH completed\r\n"
    await c.send(b"f5 LOGOUT\r\n")
    assert await c.line() == b"* BYE Logging out\r\n"
    assert await c.line() == b"f5 OK LOGOUT completed\r\n"
    assert await c.closed()
