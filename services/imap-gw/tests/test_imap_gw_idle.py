"""IDLE / DONE (RFC 2177): changes made elsewhere reach an idling session through mailbox
events (the registry, and the embedded bus end to end), or by polling the store without them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from imap_wire import PLAIN, USER, Client

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus.sqlite import SqliteBus
from postmesh.imap_gw.mailbox_events import MailboxEventConsumer

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_idle_reports_new_flags_and_expunges_then_done(env: Env) -> None:
    c = await Client.selected(env)
    await c.idle()
    await env.deliver("fourth")
    assert await c.line() == b"* 4 EXISTS"
    assert await c.line() == b"* 1 RECENT"  # the idling session is the first told of it
    await env.set_flags(2, ["\\Answered"])
    assert await c.line() == b"* 2 FETCH (UID 2 FLAGS (\\Answered))"
    await env.expunge_elsewhere([1])
    assert await c.line() == b"* 1 EXPUNGE"
    await c.send(b"DONE")
    assert await c.line() == b"i OK IDLE terminated"
    assert await c.cmd(b"f FETCH 3 (UID)") == [b"* 3 FETCH (UID 4)", b"f OK FETCH completed"]
    c.writer.close()


async def test_idle_bad_input(env: Env) -> None:
    c = await Client.selected(env)
    assert (await c.cmd(b"a IDLE now"))[-1].startswith(b"a BAD ")
    await c.idle()
    await c.send(b"b NOOP")  # anything but DONE ends IDLE with BAD
    assert (await c.line()).startswith(b"i BAD ")
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    c.writer.close()


async def test_idle_in_authenticated_state(env: Env) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", env.port)
    c = Client(r, w)
    await c.line()
    await c.cmd(b"L AUTHENTICATE PLAIN " + PLAIN)
    await c.idle()
    await c.send(b"done")
    assert await c.line() == b"i OK IDLE terminated"
    w.close()


async def test_idle_woken_by_the_embedded_bus(env: Env, tmp_path: Path) -> None:
    await env.stop_events()  # only this test's bus tells the sessions anything
    bus = SqliteBus(tmp_path / "bus.sqlite3")
    await bus.start()
    consumer = MailboxEventConsumer(bus, env.server.registry)
    consumer.start()
    try:
        c = await Client.selected(env)
        await c.idle()
        await asyncio.sleep(0.3)  # let the consumer take its starting position
        # A delivery by another replica: the store changes without telling anyone; only the
        # event on the bus does.
        await env.add(env.make_message("fourth"))
        event = events_pb2.MailboxEvent(
            user=USER, mailbox="INBOX", kind=events_pb2.MailboxEvent.KIND_MESSAGE_NEW, uids=[4]
        )
        await bus.publish(topics.MAILBOX_EVENTS, USER, event.SerializeToString())
        assert await c.line() == b"* 4 EXISTS"
        assert await c.line() == b"* 1 RECENT"
        await c.send(b"DONE")
        assert await c.line() == b"i OK IDLE terminated"
        c.writer.close()
    finally:
        await consumer.stop()
        await bus.stop()


async def test_idle_polls_the_store_without_events(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(imap_idle_poll_seconds=0.1)
    await env.stop_events()  # the bus down: IDLE polls the store
    c = await Client.selected(env)
    await c.idle()
    await env.add(env.make_message("fourth"))  # no event at all
    assert await c.line() == b"* 4 EXISTS"
    assert await c.line() == b"* 1 RECENT"
    await c.send(b"DONE")
    assert await c.line() == b"i OK IDLE terminated"
    c.writer.close()


async def test_an_idling_session_keeps_no_rendered_lines(env: Env) -> None:
    """The FETCH lines a poll rendered (line_cache.py) are dropped at IDLE: an idle session
    stays small whatever the size of its mailbox (issue 7)."""
    c = await Client.selected(env)
    assert (await c.cmd(b"f FETCH 1:* (FLAGS)"))[-1] == b"f OK FETCH completed"
    (session,) = list(env.server.registry.sessions(env.user))
    assert session.selected is not None and session.selected.lines.key is not None
    await c.idle()
    assert session.selected.lines.key is None
    await c.send(b"DONE")
    assert await c.line() == b"i OK IDLE terminated"
    # Rendered again on the next poll, with the same answer.
    assert (await c.cmd(b"g FETCH 1:* (FLAGS)"))[-1] == b"g OK FETCH completed"
    c.writer.close()
