"""Operator actions on the deferred queue (what ``postqueue -p``, ``postqueue -i`` and
``postsuper -d`` do for Postfix): list and inspect entries, retry now, delete with or without
a bounce. An entry is first leased to this replica with the store's Claim, so an operator's
action never races a worker's attempt of the same entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

Entries = Sequence[queue_pb2.QueueEntry]


class QueueAdminError(Exception):
    """``status`` is the HTTP status the admin API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(e: grpc.aio.AioRpcError, what: str) -> QueueAdminError:
    if e.code() == grpc.StatusCode.NOT_FOUND:
        return QueueAdminError(404, f"{what}: no such queue entry")
    if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return QueueAdminError(409, f"{what}: being attempted right now; try again shortly")
    if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return QueueAdminError(422, f"{what}: {e.details()}")
    return QueueAdminError(503, f"{what}: the store is unavailable ({e.code().name})")


class QueueAdmin:
    def __init__(
        self,
        queue: queue_pb2_grpc.DeliveryQueueServiceStub,
        *,
        owner: str,
        lease_seconds: int,
        deadline: float,
        run_now: Callable[[Entries], None],
        remove: Callable[[Entries, bool], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.deadline = deadline
        self._run_now = run_now
        self._remove = remove

    async def page(
        self, queue_id: str = "", page_token: str = "", page_size: int = 100
    ) -> tuple[list[queue_pb2.QueueEntry], str]:
        try:
            resp = await self.queue.List(
                queue_pb2.ListQueueRequest(
                    queue_id=queue_id, page_token=page_token, page_size=page_size
                ),
                timeout=self.deadline,
            )
        except grpc.aio.AioRpcError as e:
            raise _error(e, "list") from None
        return list(resp.entries), resp.next_page_token

    async def entries(self, queue_id: str, recipient: str = "") -> list[queue_pb2.QueueEntry]:
        """Every entry of one message (or its one recipient); 404 when there is none."""
        out: list[queue_pb2.QueueEntry] = []
        token = ""
        while True:
            page, token = await self.page(queue_id, token, 1000)
            out += [e for e in page if not recipient or e.recipient.address == recipient]
            if not token:
                break
        if not out:
            raise QueueAdminError(404, f"no queue entry for {queue_id} {recipient}".strip())
        return out

    async def _claim(self, queue_id: str, recipient: str) -> list[queue_pb2.QueueEntry]:
        claimed = []
        for e in await self.entries(queue_id, recipient):
            try:
                claimed.append(
                    await self.queue.Claim(
                        queue_pb2.ClaimEntryRequest(
                            queue_id=e.queue_id, recipient=e.recipient.address,
                            owner=self.owner, lease_seconds=self.lease_seconds,
                        ),
                        timeout=self.deadline,
                    )
                )  # fmt: skip
            except grpc.aio.AioRpcError as err:
                raise _error(err, f"{e.queue_id} {e.recipient.address}") from None
        return claimed

    async def retry_now(self, queue_id: str, recipient: str = "") -> list[queue_pb2.QueueEntry]:
        claimed = await self._claim(queue_id, recipient)
        log.info("operator retry", extra=kv(queue_id=queue_id, entries=len(claimed)))
        self._run_now(claimed)
        return claimed

    async def delete(
        self, queue_id: str, recipient: str = "", bounce: bool = False
    ) -> list[queue_pb2.QueueEntry]:
        claimed = await self._claim(queue_id, recipient)
        log.info(
            "operator delete", extra=kv(queue_id=queue_id, entries=len(claimed), bounce=bounce)
        )
        await self._remove(claimed, bounce)
        return claimed
