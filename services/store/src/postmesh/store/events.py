"""Mailbox events on the bus, published after the change is durable in the repository.

A failed publish is logged and counted, never returned to the caller: the store is the source
of truth, and imap-gw sessions resynchronise from MODSEQ rather than trust the event stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from postmesh.api.events.v1 import events_pb2
from postmesh.common import topics
from postmesh.common.bus import Bus
from postmesh.common.logging import get_logger, kv
from postmesh.store.metrics import EVENT_PUBLISH_FAILURES

log = get_logger(__name__)
Kind = events_pb2.MailboxEvent.Kind


class EventPublisher:
    def __init__(self, bus: Bus | None, timeout: float = 5.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def publish(
        self,
        user: str,
        mailbox: str,
        kind: Kind.ValueType,
        uids: Iterable[int] = (),
        modseq: int = 0,
        flags: Iterable[str] = (),
        new_name: str = "",
    ) -> None:
        event = events_pb2.MailboxEvent(
            new_name=new_name,
            user=user,
            mailbox=mailbox,
            kind=kind,
            uids=list(uids),
            modseq=modseq,
            flags=list(flags),
            at_ms=int(time.time() * 1000),
        )
        if self.bus is None:
            return
        try:
            # Key = user: one user's events stay in order on one partition.
            await asyncio.wait_for(
                self.bus.publish(topics.MAILBOX_EVENTS, user, event.SerializeToString()),
                timeout=self.timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            EVENT_PUBLISH_FAILURES.inc()
            log.exception(
                "mailbox event not published",
                extra=kv(user=user, mailbox=mailbox, kind=Kind.Name(kind)),
            )
