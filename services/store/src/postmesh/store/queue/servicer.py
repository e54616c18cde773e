"""gRPC DeliveryQueueService and MaildropLockService on a QueueRepository."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.store import errors
from postmesh.store import validation as v
from postmesh.store.blobs import BytesSource
from postmesh.store.queue.model import LeaseNotHeld, LockState, NewEntry, QueueEntry
from postmesh.store.queue.repository import QueueRepository
from postmesh.store.repository import StoreRepository
from postmesh.store.servicer import message_summary

log = get_logger(__name__)
T = TypeVar("T")

_CODES: dict[type[errors.StoreError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    LeaseNotHeld: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}


async def _fail(
    context: grpc.aio.ServicerContext,
    exc: BaseException,
    transient: tuple[type[BaseException], ...],
) -> NoReturn:
    for cls, code in _CODES.items():
        if isinstance(exc, cls):
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS):
                log.error("queue call failed", extra=kv(error=str(exc), code=code.name))
            await context.abort(code, str(exc))
    if isinstance(exc, transient):
        log.error("queue backend unavailable", exc_info=exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "store backend unavailable")
    log.error("queue call crashed", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error in the store")
    raise AssertionError("context.abort returned")


def entry_pb(e: QueueEntry) -> queue_pb2.QueueEntry:
    try:
        msg = events_pb2.InboundMessage.FromString(e.envelope)
    except DecodeError as exc:
        raise errors.DataLoss(f"queue entry {e.queue_id} {e.recipient} is damaged") from exc
    rcpt = msg.recipients[0] if msg.recipients else events_pb2.Recipient(address=e.recipient)
    return queue_pb2.QueueEntry(
        queue_id=e.queue_id, recipient=rcpt, message=msg, attempts=e.attempts,
        next_attempt_at_ms=e.next_attempt_at_ms, last_error=e.last_error,
        lease_owner=e.lease_owner, lease_expires_at_ms=e.lease_expires_at_ms,
        created_at_ms=e.created_at_ms, delay_notified_at_ms=e.delay_notified_at_ms,
    )  # fmt: skip


# ClaimDueRequest.content_max_bytes: at most this per message and in all per answer (gRPC's
# message limit is 16 MiB, postmesh.common.grpc).
MAX_CLAIM_CONTENT_BYTES = 1024 * 1024
MAX_CLAIM_CONTENTS_BYTES = 4 * 1024 * 1024


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class DeliveryQueueServicer(queue_pb2_grpc.DeliveryQueueServiceServicer):
    def __init__(self, queue: QueueRepository, store: StoreRepository) -> None:
        self.queue = queue
        self.store = store

    async def _call(self, context: grpc.aio.ServicerContext, op: Awaitable[T]) -> T:
        try:
            return await op
        except Exception as exc:
            transient = self.queue.transient_errors + self.store.transient_errors
            await _fail(context, exc, transient)

    async def _blob_for(self, msg: events_pb2.InboundMessage) -> str:
        """The message content as a pinned blob, through PutBlob's own path (put_blob): a new
        upload pin of POSTMESH_STORE_UPLOAD_PIN_SECONDS keeps it while the entry waits."""
        source = msg.WhichOneof("content")
        if source == "inline_content":
            if not msg.inline_content:
                raise errors.InvalidArgument("message content is empty")
            return (await self.store.put_blob(_one(msg.inline_content))).blob_id
        if source == "blob_id":
            try:
                chunks = await self.store.read_blob(msg.blob_id)
            except errors.NotFound:
                raise errors.InvalidArgument(f"unknown blob_id {msg.blob_id}") from None
            # Stored again under the same address: only the pin is new (the edge's pin from
            # PutBlob may be days old by the time a retry is scheduled).
            info = await self.store.put_blob(chunks)
            if info.blob_id != msg.blob_id:
                raise errors.DataLoss(f"blob {msg.blob_id} does not match its address")
            return info.blob_id
        raise errors.InvalidArgument("message has no content (inline_content or blob_id)")

    async def _enqueue(self, request: queue_pb2.EnqueueRequest) -> tuple[QueueEntry, bool]:
        msg, rcpt = request.message, request.recipient.address
        if msg.queue_id and msg.queue_id != request.queue_id:
            raise errors.InvalidArgument("message.queue_id differs from queue_id")
        source_kind = msg.WhichOneof("content")
        if self.queue.writes_content and source_kind == "blob_id":
            # The edge's blob (PutBlob) and the entry in one transaction: the pin extended
            # as a new upload's would be, without reading the content back.
            pin_until = int(time.time()) + self.store.upload_pin_seconds
            blob_id = v.blob_id(msg.blob_id)
            return await self.queue.enqueue_with_content(
                self._new_entry(request, blob_id), None, pin_until
            )
        if self.queue.writes_content and source_kind == "inline_content":
            # The content and its entry in one transaction (one commit instead of two, no
            # separate duplicate check): what the bus consumer sends for most messages.
            content = msg.inline_content
            if not content:
                raise errors.InvalidArgument("message content is empty")
            if len(content) > self.store.max_message_bytes:
                raise errors.InvalidArgument(
                    f"content exceeds the limit of {self.store.max_message_bytes} bytes"
                )
            source = BytesSource(content)
            pin_until = int(time.time()) + self.store.upload_pin_seconds
            return await self.queue.enqueue_with_content(
                self._new_entry(request, source.blob_id), source, pin_until
            )
        # Validates the key before any blob is written; a repeat writes nothing.
        existing = await self.queue.get(request.queue_id, rcpt)
        if existing is not None:
            return existing, True
        blob_id = await self._blob_for(msg)
        return await self.queue.enqueue(self._new_entry(request, blob_id))

    @staticmethod
    def _new_entry(request: queue_pb2.EnqueueRequest, blob_id: str) -> NewEntry:
        msg, rcpt = request.message, request.recipient.address
        envelope = events_pb2.InboundMessage()
        envelope.CopyFrom(msg)
        envelope.queue_id = request.queue_id
        envelope.blob_id = blob_id  # replaces inline_content (oneof)
        del envelope.recipients[:]
        envelope.recipients.append(request.recipient)
        new = NewEntry(
            request.queue_id, rcpt, envelope.SerializeToString(deterministic=True), blob_id,
            request.attempts, request.next_attempt_at_ms, request.last_error,
            request.lease_owner, request.lease_seconds,
        )  # fmt: skip
        return new

    async def Enqueue(
        self, request: queue_pb2.EnqueueRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.EnqueueResponse:
        bind_log_context(queue_id=request.queue_id)
        entry, dup = await self._call(context, self._enqueue(request))
        log.info(
            "queue entry stored",
            extra=kv(
                recipient=entry.recipient, duplicate=dup, attempts=entry.attempts,
                next_attempt_at_ms=entry.next_attempt_at_ms,
            ),
        )  # fmt: skip
        pb = entry_pb(entry)
        content = b""
        if request.content_max_bytes and not dup and request.message.blob_id:
            found = await self._call(context, self._contents([pb], request.content_max_bytes))
            content = found.get(pb.message.blob_id, b"")
        return queue_pb2.EnqueueResponse(entry=pb, duplicate=dup, content=content)

    async def ClaimDue(
        self, request: queue_pb2.ClaimDueRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.ClaimDueResponse:
        entries = await self._call(
            context, self.queue.claim_due(request.owner, request.max_items, request.lease_seconds)
        )
        if entries:
            log.info("queue entries claimed", extra=kv(owner=request.owner, count=len(entries)))
        pbs = [entry_pb(e) for e in entries]
        contents = await self._call(context, self._contents(pbs, request.content_max_bytes))
        return queue_pb2.ClaimDueResponse(entries=pbs, contents=contents)

    async def _contents(
        self, entries: list[queue_pb2.QueueEntry], max_bytes: int
    ) -> dict[str, bytes]:
        """The claimed messages' contents up to ``max_bytes`` each (capped), within the
        answer's budget: the caller then needs no GetBlob for them."""
        limit = min(max_bytes, MAX_CLAIM_CONTENT_BYTES)
        budget = MAX_CLAIM_CONTENTS_BYTES
        out: dict[str, bytes] = {}
        for e in entries:
            blob_id, size = e.message.blob_id, e.message.size
            # message.size is what the edge accepted; 0 (unknown) is read and measured.
            if not blob_id or blob_id in out or size > limit or size > budget or limit <= 0:
                continue
            try:
                chunks = await self.store.read_blob(blob_id)
            except errors.NotFound:
                continue  # the attempt's GetBlob answers it (a bounce without the content)
            data = b"".join([c async for c in chunks])
            if len(data) > limit or len(data) > budget:
                continue
            out[blob_id] = data
            budget -= len(data)
        return out

    async def Claim(
        self, request: queue_pb2.ClaimEntryRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueEntry:
        bind_log_context(queue_id=request.queue_id)
        entry = await self._call(
            context,
            self.queue.claim(
                request.queue_id, request.recipient, request.owner, request.lease_seconds
            ),
        )
        log.info("queue entry claimed", extra=kv(recipient=entry.recipient, owner=request.owner))
        return entry_pb(entry)

    async def Reschedule(
        self, request: queue_pb2.RescheduleRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueEntry:
        bind_log_context(queue_id=request.queue_id)
        entry = await self._call(
            context,
            self.queue.reschedule(
                request.queue_id, request.recipient, request.owner,
                request.next_attempt_at_ms, request.last_error, request.delay_notified_at_ms,
            ),
        )  # fmt: skip
        log.info(
            "queue entry rescheduled",
            extra=kv(recipient=entry.recipient, attempts=entry.attempts,
                     next_attempt_at_ms=entry.next_attempt_at_ms),
        )  # fmt: skip
        return entry_pb(entry)

    async def Delete(
        self, request: queue_pb2.DeleteQueueEntryRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.DeleteQueueEntryResponse:
        bind_log_context(queue_id=request.queue_id)
        await self._call(
            context, self.queue.delete(request.queue_id, request.recipient, request.owner)
        )
        log.info("queue entry deleted", extra=kv(recipient=request.recipient))
        return queue_pb2.DeleteQueueEntryResponse()

    async def DeleteMany(
        self, request: queue_pb2.DeleteManyRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.DeleteManyResponse:
        items = [(e.queue_id, e.recipient, e.owner) for e in request.entries]
        results = await self._call(context, self.queue.delete_many(items))
        outcomes = []
        for (queue_id, rcpt, _), error in zip(items, results, strict=True):
            if error is None:
                outcomes.append(queue_pb2.DELETE_OUTCOME_DELETED)
                log.info("queue entry deleted", extra=kv(queue_id=queue_id, recipient=rcpt))
            elif isinstance(error, LeaseNotHeld):
                outcomes.append(queue_pb2.DELETE_OUTCOME_LEASE_NOT_HELD)
            else:
                outcomes.append(queue_pb2.DELETE_OUTCOME_NOT_FOUND)
        return queue_pb2.DeleteManyResponse(outcomes=outcomes)

    async def List(
        self, request: queue_pb2.ListQueueRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.ListQueueResponse:
        entries, token = await self._call(
            context,
            self.queue.list_entries(request.queue_id, request.page_token, request.page_size),
        )
        return queue_pb2.ListQueueResponse(
            entries=[entry_pb(e) for e in entries], next_page_token=token
        )

    async def Stats(
        self, request: queue_pb2.QueueStatsRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.QueueStatsResponse:
        s = await self._call(context, self.queue.stats())
        return queue_pb2.QueueStatsResponse(
            entries=s.entries, due=s.due, leased=s.leased,
            oldest_created_at_ms=s.oldest_created_at_ms,
        )  # fmt: skip


def _lock_pb(state: LockState) -> queue_pb2.MaildropLockResponse:
    return queue_pb2.MaildropLockResponse(
        granted=state.granted, holder=state.holder, expires_at_ms=state.expires_at_ms
    )


class MaildropLockServicer(queue_pb2_grpc.MaildropLockServiceServicer):
    def __init__(
        self,
        queue: QueueRepository,
        store: StoreRepository | None = None,
        *,
        default_page_size: int = 500,
        max_page_size: int = 5000,
    ) -> None:
        """``store``: the mailboxes OpenMaildrop lists (without it OpenMaildrop is
        UNIMPLEMENTED and gateways fall back to Acquire and ListMessages)."""
        self.queue = queue
        self.store = store
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size

    async def _call(self, context: grpc.aio.ServicerContext, op: Awaitable[T]) -> T:
        try:
            return await op
        except Exception as exc:
            await _fail(context, exc, self.queue.transient_errors)

    async def Acquire(
        self, request: queue_pb2.MaildropLockRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.MaildropLockResponse:
        bind_log_context(session_id=request.owner, user=request.user)
        state = await self._call(
            context, self.queue.acquire_lock(request.user, request.owner, request.lease_seconds)
        )
        if not state.granted:
            log.info("maildrop in use", extra=kv(holder=state.holder))
        return _lock_pb(state)

    async def Renew(
        self, request: queue_pb2.MaildropLockRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.MaildropLockResponse:
        bind_log_context(session_id=request.owner, user=request.user)
        state = await self._call(
            context, self.queue.renew_lock(request.user, request.owner, request.lease_seconds)
        )
        if not state.granted:
            log.warning("maildrop lock lost", extra=kv(holder=state.holder))
        return _lock_pb(state)

    async def Release(
        self, request: queue_pb2.MaildropLockRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.ReleaseMaildropLockResponse:
        bind_log_context(session_id=request.owner, user=request.user)
        released = await self._call(context, self.queue.release_lock(request.user, request.owner))
        return queue_pb2.ReleaseMaildropLockResponse(released=released)

    async def OpenMaildrop(
        self, request: queue_pb2.OpenMaildropRequest, context: grpc.aio.ServicerContext
    ) -> queue_pb2.OpenMaildropResponse:
        store = self.store
        if store is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "OpenMaildrop needs the store")
        assert store is not None
        lock = request.lock
        bind_log_context(session_id=lock.owner, user=lock.user)
        state = await self._call(
            context, self.queue.acquire_lock(lock.user, lock.owner, lock.lease_seconds)
        )
        resp = queue_pb2.OpenMaildropResponse(lock=_lock_pb(state))
        if not state.granted:
            log.info("maildrop in use", extra=kv(holder=state.holder))
            return resp
        # Read only now, under the lock (RFC 1939 §8): what a session that held it last
        # deleted is gone from this listing.
        limit = min(request.limit or self.default_page_size, self.max_page_size)
        try:
            box, (msgs, more) = await asyncio.gather(
                store.get_mailbox(lock.user, request.mailbox),
                store.list_messages(lock.user, request.mailbox, 0, limit),
            )
        except errors.NotFound:
            return resp  # no mailbox yet: an empty maildrop, the lock held
        except Exception as exc:
            # The caller cannot tell the lock was granted: free it before failing.
            try:
                await self.queue.release_lock(lock.user, lock.owner)
            except Exception:
                log.warning("could not release the maildrop lock; it will expire")
            await _fail(context, exc, (*self.queue.transient_errors, *store.transient_errors))
        resp.mailbox_found = True
        resp.uidvalidity = box.uidvalidity
        resp.page.messages.extend(message_summary(m) for m in msgs)
        resp.page.more = more
        return resp
