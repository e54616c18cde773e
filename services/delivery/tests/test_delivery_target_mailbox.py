"""InboundMessage.mailbox (the edge's filing decision, e.g. Junk for DMARC quarantine) is
honoured by local delivery, with INBOX when the user has no such mailbox."""

from __future__ import annotations

from typing import Any

import grpc

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import store_pb2
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
