"""Per-message trace: every DeliveryEvent of ``postmesh.delivery-events`` kept in memory per
queue id, so ``GET /api/v1/trace/{queue_id}`` can show each step from acceptance to the
outcome. Each replica reads the whole topic (no consumer group) from its start, so any replica
answers for every message; the topic's retention and ``max_messages`` bound the history."""

from __future__ import annotations

from collections import OrderedDict

from postmesh.api.events.v1 import events_pb2
from postmesh.common.bus import BusRecord
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

OUTCOME_NAMES = {
    events_pb2.DeliveryEvent.OUTCOME_QUEUED: "queued",
    events_pb2.DeliveryEvent.OUTCOME_DELIVERED: "delivered",
    events_pb2.DeliveryEvent.OUTCOME_RELAYED: "relayed",
    events_pb2.DeliveryEvent.OUTCOME_DEFERRED: "deferred",
    events_pb2.DeliveryEvent.OUTCOME_BOUNCED: "bounced",
}


class TraceIndex:
    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self._events: OrderedDict[str, list[events_pb2.DeliveryEvent]] = OrderedDict()
        self._seen: set[tuple[str, str, int, int, int]] = set()

    async def handle(self, record: BusRecord) -> None:
        event = events_pb2.DeliveryEvent()
        try:
            event.ParseFromString(record.value)
        except Exception:
            log.warning("undecodable delivery event", extra=kv(offset=record.offset))
            return
        self.add(event)

    def add(self, event: events_pb2.DeliveryEvent) -> None:
        key = (event.queue_id, event.recipient, event.outcome, event.attempt, event.at_ms)
        if key in self._seen:
            return  # the same event published twice (a retried publish)
        events = self._events.get(event.queue_id)
        if events is None:
            events = self._events[event.queue_id] = []
            while len(self._events) > self.max_messages:
                _, dropped = self._events.popitem(last=False)
                for e in dropped:
                    self._seen.discard((e.queue_id, e.recipient, e.outcome, e.attempt, e.at_ms))
        self._seen.add(key)
        events.append(event)

    def events(self, queue_id: str) -> list[events_pb2.DeliveryEvent]:
        return sorted(self._events.get(queue_id, []), key=lambda e: (e.at_ms, e.attempt))
