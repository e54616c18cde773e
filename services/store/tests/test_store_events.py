"""EventPublisher: the change's caller does not wait for the bus; events still go out in the
order they were made, a failed publish does not stop the ones after it, and close() publishes
what is queued."""

from __future__ import annotations

import asyncio
from typing import cast

from postmesh.api.events.v1 import events_pb2
from postmesh.common.bus import Bus
from postmesh.store.events import EventPublisher

Kind = events_pb2.MailboxEvent.Kind


class SlowBus:
    """Publishes after a delay; fails the record whose mailbox is "Broken"."""

    def __init__(self) -> None:
        self.records: list[events_pb2.MailboxEvent] = []
        self.release = asyncio.Event()

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await self.release.wait()
        event = events_pb2.MailboxEvent.FromString(value)
        if event.mailbox == "Broken":
            raise ConnectionError("bus down")
        assert key == event.user
        self.records.append(event)


async def test_publish_returns_before_the_bus_and_keeps_order() -> None:
    bus = SlowBus()
    events = EventPublisher(cast(Bus, bus))
    for i, box in enumerate(["A", "Broken", "B", "C"]):
        await asyncio.wait_for(events.publish("u@x", box, Kind.KIND_FLAGS_CHANGED, [i]), 1)
    assert bus.records == []  # nobody waited for the bus
    bus.release.set()
    await events.close()
    assert [(e.mailbox, list(e.uids)) for e in bus.records] == [("A", [0]), ("B", [2]), ("C", [3])]


async def test_close_gives_up_after_its_timeout() -> None:
    bus = SlowBus()  # never released
    events = EventPublisher(cast(Bus, bus))
    await events.publish("u@x", "A", Kind.KIND_MESSAGE_NEW, [1])
    await asyncio.wait_for(events.close(timeout=0.05), 2)
    assert bus.records == []
    await events.close()  # closing again is harmless
