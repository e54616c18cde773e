"""IDLE / DONE (RFC 2177, RFC 9051 §6.3.13).

While idling the session waits for three things: the client's DONE, a mailbox event for the
selected mailbox (``Session.mailbox_changed`` sets ``session.wake``), and a timer. On an event
it resynchronises from the store and sends EXPUNGE/EXISTS/FETCH at once; on the timer it asks the
store anyway (often when no events are arriving, at each keepalive otherwise) and says
``* OK Still here`` so that NATs keep the connection. Past the autologout time (30 minutes,
RFC 9051 §5.4; clients re-IDLE every 29) the session ends with BYE.
"""

from __future__ import annotations

import asyncio

from postmesh.imap_gw import response
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.commands.sync import flush_updates
from postmesh.imap_gw.connection import ProtocolAbuse
from postmesh.imap_gw.parser.store import Idle
from postmesh.imap_gw.response import Status
from postmesh.imap_gw.session import IdleTimeout, Result, Session, bad, ok
from postmesh.imap_gw.state import State


def _poll_interval(session: Session) -> float:
    s = session.settings
    live = session.registry is not None and session.registry.live
    return s.imap_idle_keepalive_seconds if live else s.imap_idle_poll_seconds


@handles(Idle, AUTHENTICATED)
async def idle(session: Session, cmd: Idle) -> Result:
    loop = asyncio.get_running_loop()
    if session.selected is not None:
        session.selected.drop_rendered()  # an idling client polls no more
    wake = session.wake = asyncio.Event()
    await session.send(b"+ idling\r\n")
    # Anything already pending goes out now, not at the next event.
    await flush_updates(session, allow_expunge=True)
    deadline = loop.time() + session.settings.imap_idle_timeout_seconds
    keepalive_at = loop.time() + session.settings.imap_idle_keepalive_seconds
    reader = asyncio.ensure_future(session.conn.read_line())
    try:
        while session.state is not State.LOGOUT:
            now = loop.time()
            if now >= deadline:
                raise IdleTimeout
            timeout = min(_poll_interval(session), keepalive_at - now, deadline - now)
            waiter = asyncio.ensure_future(wake.wait())
            done, _ = await asyncio.wait(
                {reader, waiter}, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if reader in done:
                try:
                    line = reader.result()
                except ProtocolAbuse as e:
                    return bad(e.message, e.code)
                except TimeoutError as e:
                    raise IdleTimeout from e
                if line.strip().upper() != b"DONE":
                    return bad("Expected DONE to end IDLE")
                return ok("IDLE terminated")
            woken = wake.is_set()
            wake.clear()
            # Woken: the event's mailbox changed; else the timer: ask the store anyway.
            await flush_updates(session, allow_expunge=True, force=not woken)
            if loop.time() >= keepalive_at:
                await session.send(response.status_line(Status.OK, "Still here"))
                keepalive_at = loop.time() + session.settings.imap_idle_keepalive_seconds
        return ok("IDLE terminated")
    finally:
        session.wake = None
        if not reader.done():
            reader.cancel()
