from __future__ import annotations

from postmesh.api.events.v1 import events_pb2
from postmesh.common.bus import BusRecord
from postmesh.delivery.trace import TraceIndex

E = events_pb2.DeliveryEvent


async def test_events_per_message_in_time_order_without_repeats() -> None:
    index = TraceIndex(max_messages=2)
    late = E(queue_id="Q1", recipient="a@x", outcome=E.OUTCOME_RELAYED, attempt=2, at_ms=20)
    early = E(queue_id="Q1", recipient="a@x", outcome=E.OUTCOME_DEFERRED, attempt=1, at_ms=10)
    for ev in (late, early, late):  # the repeat is a retried publish
        await index.handle(BusRecord("t", "Q1", ev.SerializeToString(), 0, 1))
    await index.handle(BusRecord("t", "Q1", b"\xff\xff", 0, 2))  # ignored
    assert [e.outcome for e in index.events("Q1")] == [E.OUTCOME_DEFERRED, E.OUTCOME_RELAYED]
    index.add(E(queue_id="Q2", at_ms=1))
    index.add(E(queue_id="Q3", at_ms=1))  # the oldest message is forgotten
    assert index.events("Q1") == [] and len(index.events("Q3")) == 1
    index.add(late)
    assert index.events("Q1") == [late]  # forgotten, so no longer a repeat
