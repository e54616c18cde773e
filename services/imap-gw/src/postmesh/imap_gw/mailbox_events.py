"""Mailbox events from the bus, fanned out to this replica's sessions of the user.

Every imap-gw replica reads the whole ``postmesh.mailbox-events`` topic (no consumer group:
``group=None`` keeps no committed offsets, so each reader sees every record, from the newest
on) and hands each event to the sessions of its user that have its mailbox selected. An event
only marks the session's mailbox dirty and wakes its IDLE; the session then asks the store what
changed (``commands/sync.py``): the store is the source of truth, events may be late, doubled
or lost, and a session that was told nothing still resynchronises at NOOP and on IDLE's timer.
"""

from __future__ import annotations

import asyncio
import weakref

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus import Bus, BusRecord
from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw import metrics
from postmesh.imap_gw.session import Session

log = get_logger(__name__)
Kind = events_pb2.MailboxEvent.Kind


class Registry:
    """Sessions with a mailbox selected, by user. Weak: a session that ends without saying so
    leaves no trace, and an entry costs a few dozen bytes."""

    def __init__(self) -> None:
        self._by_user: dict[str, weakref.WeakSet[Session]] = {}
        # True while events are arriving from the bus (IDLE then polls the store rarely).
        self._live = False

    @property
    def live(self) -> bool:
        return self._live

    @live.setter
    def live(self, value: bool) -> None:
        self._live = value

    def add(self, user: str, session: Session) -> None:
        self._by_user.setdefault(user, weakref.WeakSet()).add(session)

    def discard(self, user: str, session: Session) -> None:
        sessions = self._by_user.get(user)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[user]

    def sessions(self, user: str) -> list[Session]:
        return list(self._by_user.get(user, ()))

    def notify(self, user: str, mailbox: str, new_name: str = "") -> int:
        """Tell the user's sessions that ``mailbox`` changed; how many were told."""
        sessions = self._by_user.get(user)
        if not sessions:
            return 0
        n = 0
        for s in list(sessions):
            s.mailbox_changed(mailbox, new_name)
            n += 1
        return n

    def handle_event(self, event: events_pb2.MailboxEvent) -> None:
        if event.kind == Kind.KIND_FLAGS_CHANGED and event.modseq:
            # Often a session's own STORE coming back: a session whose model already holds
            # these flags at this MODSEQ has nothing to ask the store (Session.flags_changed).
            for s in self.sessions(event.user):
                s.flags_changed(event.mailbox, event.uids, event.flags, event.modseq)
            return
        if event.kind == Kind.KIND_MESSAGE_NEW and event.modseq and event.uids:
            # Often a session's own APPEND coming back (Session.messages_new).
            for s in self.sessions(event.user):
                s.messages_new(event.mailbox, event.uids, event.modseq)
            return
        new_name = event.new_name if event.kind == Kind.KIND_MAILBOX_RENAMED else ""
        self.notify(event.user, event.mailbox, new_name)


class MailboxEventConsumer:
    """Reads the topic until stopped; restarts the read after a failure (the bus being down
    makes IDLE fall back to polling, see ``Registry.live``)."""

    def __init__(self, bus: Bus, registry: Registry, *, retry_seconds: float = 5.0) -> None:
        self.bus = bus
        self.registry = registry
        self.retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None

    async def handle(self, record: BusRecord) -> None:
        event = events_pb2.MailboxEvent()
        try:
            event.ParseFromString(record.value)
        except Exception:
            log.warning("undecodable mailbox event dropped", extra=kv(offset=record.offset))
            return
        metrics.MAILBOX_EVENTS.inc()
        self.registry.handle_event(event)

    async def _run(self) -> None:
        while True:
            try:
                # group=None: every replica reads every event; from_latest: old events concern
                # no open session (each resynchronised when it selected its mailbox).
                await self.bus.consume([topics.MAILBOX_EVENTS], None, self.handle, from_latest=True)
                return  # the bus is stopping
            except asyncio.CancelledError:
                raise
            except Exception:
                self.registry.live = False
                log.exception("mailbox events unavailable; IDLE polls the store meanwhile")
                await asyncio.sleep(self.retry_seconds)

    async def _watch(self) -> None:
        while True:
            try:
                ready = await self.bus.ready()
            except asyncio.CancelledError:
                raise
            except Exception:
                ready = False
            task = self._task
            self.registry.live = ready and task is not None and not task.done()
            await asyncio.sleep(self.retry_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._health = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        for task in (self._health, self._task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._health = None
        self.registry.live = False
