"""Limits of issue 7 item 6 over the wire: literals before login, pipelining, IDLE autologout
and the per-user session cap. (Line length, the literal and command limits and the idle timeout
outside IDLE are in test_imap_gw_wire.py; APPEND's message-size limit with APPEND's tests.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from imap_wire import PLAIN, Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

MakeEnv = Callable[..., Awaitable["Env"]]


async def test_literals_before_login_are_capped_small(make_env: MakeEnv) -> None:
    env = await make_env(imap_max_preauth_literal_bytes=1000)
    c = await Client.connect(env)
    # Synchronizing and too large: refused before the "+", the session goes on.
    assert await c.cmd(b"a LOGIN {1001}") == [b"a BAD [TOOBIG] Literal too large"]
    # Within the cap: asked for with "+".
    await c.send(b"b LOGIN {1000}")
    assert (await c.line()).startswith(b"+ ")
    await c.send(b"x" * 1000 + b" wrong")
    assert await c.line() == b"b NO [AUTHENTICATIONFAILED] Authentication failed"
    # The same sizes after login are fine (the literal limit is 64 KiB).
    reply = await c.cmd(b"L AUTHENTICATE PLAIN " + PLAIN)
    assert reply[-1].startswith(b"L OK"), reply
    await c.send(b"c SELECT {5000}")
    assert (await c.line()).startswith(b"+ ")
    await c.send(b"y" * 5000)
    assert (await c.line()).startswith(b"c NO ")
    await c.close()
    # LITERAL+ before login beyond the cap: the data comes anyway; it is read and dropped up
    # to the literal limit (64 KiB), and the command refused.
    c = await Client.connect(env)
    await c.send(b"d LOGIN {2000+}\r\n" + b"u" * 2000 + b" pw")
    assert await c.line() == b"d BAD [TOOBIG] Literal too large"
    assert await c.cmd(b"e NOOP") == [b"e OK NOOP completed"]
    # Beyond that, too much to swallow: the session ends.
    await c.send(b"f LOGIN {70000+}")
    assert await c.line() == b"* BYE [TOOBIG] Literal too large"
    assert await c.closed()


async def test_append_literal_is_limited_by_the_message_size(make_env: MakeEnv) -> None:
    """APPEND's message literal may be larger than other literals, up to imap_max_message_bytes;
    beyond that NO [TOOBIG] before the client sends it (RFC 7888 §4, RFC 7889 §3)."""
    env = await make_env(imap_max_literal_bytes=1024, imap_max_message_bytes=4096)
    c = await Client.login(env)
    too_large = b"NO [TOOBIG] Message too large (the limit is 4096 octets)"
    assert await c.cmd(b"a APPEND INBOX {4097}") == [b"a " + too_large]
    assert await c.cmd(b"b APPEND INBOX (\\Seen) {5000}") == [b"b " + too_large]
    await c.send(b"c APPEND INBOX {4096}")
    assert (await c.line()).startswith(b"+ ")  # more than the literal limit: it is a message
    await c.send(b"z" * 4096)
    assert (await c.line()).startswith(b"c ")
    # Other commands keep the literal limit.
    assert await c.cmd(b"d SELECT {1025}") == [b"d BAD [TOOBIG] Literal too large"]
    assert await c.cmd(b"e NOOP") == [b"e OK NOOP completed"]
    # LITERAL+ beyond the message size: too much to swallow, the session ends.
    await c.send(b"f APPEND INBOX {9000+}")
    assert await c.line() == b"* BYE [TOOBIG] Literal too large"
    assert await c.closed()


async def test_pipelined_commands_are_answered_in_order(env: Env) -> None:
    """Commands are read one at a time and each is answered before the next is read, so what a
    client pipelines waits in the socket and a bounded reader buffer (ADR 0012)."""
    c = await Client.selected(env)
    n = 1000
    c.writer.write(b"".join(b"p%d NOOP\r\n" % i for i in range(n)))
    c.writer.write(b"q UID SEARCH ALL\r\n")
    await c.writer.drain()
    for i in range(n):
        assert await c.line() == b"p%d OK NOOP completed" % i
    assert [await c.line(), await c.line()] == [b"* SEARCH 1 2 3", b"q OK UID SEARCH completed"]
    await c.close()


async def test_a_client_that_does_not_read_stalls_only_itself(env: Env) -> None:
    """Pipelining without reading the answers fills the server's send buffer; the session then
    waits (backpressure) instead of buffering without bound, and other sessions go on."""
    c = await Client.selected(env)
    burst = b"".join(b"f%d FETCH 1:* (FLAGS UID RFC822.SIZE)\r\n" % i for i in range(1500))

    async def flood() -> None:
        c.writer.write(burst)
        await c.writer.drain()

    sender = asyncio.create_task(flood())
    other = await Client.selected(env)
    assert await other.cmd(b"o SEARCH SEEN") == [b"* SEARCH 1", b"o OK SEARCH completed"]
    await other.close()
    # Now read everything: every command was answered, in order.
    last = b""
    while not last.startswith(b"f1499 "):
        last = await c.line()
    assert last == b"f1499 OK FETCH completed"
    await sender
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    await c.close()


async def test_idle_autologout(make_env: MakeEnv) -> None:
    """RFC 9051 §5.4 / RFC 2177 §3: IDLE does not reset the autologout timer; a client must
    re-issue IDLE (at least every 29 minutes)."""
    env = await make_env(imap_idle_timeout_seconds=0.3)
    c = await Client.login(env)
    await c.idle()
    assert await c.line() == b"* BYE Autologout; idle for too long"
    assert await c.closed()


async def test_idle_timeout_default_is_at_least_30_minutes(env: Env) -> None:
    from postmesh.imap_gw.settings import ImapSettings

    defaults = ImapSettings.model_fields
    assert defaults["imap_idle_timeout_seconds"].default >= 30 * 60
    assert defaults["imap_idle_keepalive_seconds"].default < 29 * 60


async def test_sessions_per_user_are_capped(make_env: MakeEnv) -> None:
    env = await make_env(imap_max_sessions_per_user=2)
    env.auth.passwords["bob@example.org"] = "bobpw"
    first = await Client.login(env)
    second = await Client.login(env)
    third = await Client.connect(env)
    # The third session of the user is one too many.
    assert await third.cmd(b"L AUTHENTICATE PLAIN " + PLAIN) == [
        b"L NO [LIMIT] Too many sessions for this user on this server"
    ]
    # Refused, still connected and not logged in; another user is not affected.
    assert await third.cmd(b"s SELECT INBOX") == [b"s BAD Log in first"]
    assert (await third.cmd(b"b LOGIN bob@example.org bobpw"))[-1].startswith(b"b OK")
    bob_again = await Client.connect(env)
    assert (await bob_again.cmd(b"b LOGIN bob@example.org bobpw"))[-1].startswith(b"b OK")
    # A session that ends frees its place.
    assert (await first.cmd(b"o LOGOUT"))[-1] == b"o OK LOGOUT completed"
    for _ in range(200):
        if env.server.user_sessions.count(env.user) < 2:
            break
        await asyncio.sleep(0.01)
    fourth = await Client.connect(env)
    reply = await fourth.cmd(b"L AUTHENTICATE PLAIN " + PLAIN)
    assert reply[-1].startswith(b"L OK"), reply
    for c in (second, third, bob_again, fourth):
        await c.close()
