"""InboundMessage.mailbox (the edge's filing decision, e.g. Junk for DMARC quarantine) is
honoured by local delivery, with INBOX when the user has no such mailbox."""

from __future__ import annotations

from typing import Any

import grpc

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2
from postmesh.common.store_client.calls import NotCarried
from postmesh.delivery.local import LocalDelivery
from postmesh.delivery.model import Outcome


class MailboxStore:
    def __init__(self, mailboxes: dict[str, set[str]]) -> None:
        self.mailboxes = mailboxes
        self.filed: list[tuple[str, str]] = []

    async def Deliver(self, req: store_pb2.DeliverRequest, timeout: float) -> Any:
        name = req.mailbox or "INBOX"
        if name not in self.mailboxes[req.user]:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "no mailbox"
            )
        self.filed.append((req.user, name))
        return store_pb2.DeliverResponse(uid=1, uidvalidity=1, mailbox=name)


async def test_message_is_filed_into_the_target_mailbox_or_inbox() -> None:
    store = MailboxStore({"a@x.test": {"INBOX", "Junk"}, "b@x.test": {"INBOX"}})
    local = LocalDelivery(store, 5)  # type: ignore[arg-type]
    msg = events_pb2.InboundMessage(queue_id="Q1", inline_content=b"Subject: x\r\n\r\nb\r\n")
    msg.mailbox = "Junk"
    result = await local.deliver(msg, "a@x.test", ["a@x.test", "b@x.test"])
    assert result.outcome is Outcome.DELIVERED
    assert store.filed == [("a@x.test", "Junk"), ("b@x.test", "INBOX")]
    store.filed.clear()
    msg.mailbox = ""
    await local.deliver(msg, "a@x.test", ["a@x.test"])
    assert store.filed == [("a@x.test", "INBOX")]


class StreamOf:
    """A call stream (ADR 71) over ``store``: answers as the store would, or cannot carry
    the first ``fail`` calls (the stream ended after sending them, NotCarried(sent=True))."""

    def __init__(self, store: MailboxStore, fail: int = 0) -> None:
        self.store = store
        self.fail = fail
        self.carried: list[str] = []

    async def call(self, method: str, req: Any, response_type: Any, timeout: float) -> Any:
        if self.fail:
            self.fail -= 1
            raise NotCarried("stream ended", sent=True)
        self.carried.append(method)
        assert method == "Deliver"
        return await MailboxStore.Deliver(self.store, req, timeout)  # not counted as unary


class CountingStore(MailboxStore):
    def __init__(self, mailboxes: dict[str, set[str]]) -> None:
        super().__init__(mailboxes)
        self.unary = 0

    async def Deliver(self, req: store_pb2.DeliverRequest, timeout: float) -> Any:
        self.unary += 1
        return await super().Deliver(req, timeout)


async def test_deliver_goes_on_the_call_stream_with_its_inbox_fallback() -> None:
    store = CountingStore({"a@x.test": {"INBOX"}})
    stream = StreamOf(store)
    local = LocalDelivery(store, 5, stream)  # type: ignore[arg-type]
    msg = events_pb2.InboundMessage(queue_id="Q2", inline_content=b"Subject: x\r\n\r\nb\r\n")
    msg.mailbox = "Junk"  # missing: NOT_FOUND on the stream, then INBOX on the stream
    result = await local.deliver(msg, "a@x.test", ["a@x.test"])
    assert result.outcome is Outcome.DELIVERED
    assert stream.carried == ["Deliver", "Deliver"]
    assert store.filed == [("a@x.test", "INBOX")]
    assert store.unary == 0


async def test_deliver_the_stream_could_not_answer_is_made_as_a_unary_call() -> None:
    store = CountingStore({"a@x.test": {"INBOX"}})
    stream = StreamOf(store, fail=1)
    local = LocalDelivery(store, 5, stream)  # type: ignore[arg-type]
    msg = events_pb2.InboundMessage(queue_id="Q3", inline_content=b"Subject: x\r\n\r\nb\r\n")
    result = await local.deliver(msg, "a@x.test", ["a@x.test"])
    assert result.outcome is Outcome.DELIVERED
    assert stream.carried == []
    assert store.filed == [("a@x.test", "INBOX")]
    assert store.unary == 1
