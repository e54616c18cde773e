"""gRPC StoreService on top of a StoreRepository: protobuf in/out, status codes, events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import NoReturn, TypeVar

import grpc

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.grpc import CHUNK_BYTES
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.store import errors, metrics
from postmesh.store.events import EventPublisher, Kind
from postmesh.store.model import Delivery, FlagsMode, Mailbox, Message
from postmesh.store.repository import StoreRepository

log = get_logger(__name__)
T = TypeVar("T")

_CODES: dict[type[errors.StoreError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}
_MODES = {
    store_pb2.FLAGS_MODE_ADD: FlagsMode.ADD,
    store_pb2.FLAGS_MODE_REMOVE: FlagsMode.REMOVE,
    store_pb2.FLAGS_MODE_REPLACE: FlagsMode.REPLACE,
}


def _mailbox_info(m: Mailbox) -> store_pb2.MailboxInfo:
    return store_pb2.MailboxInfo(
        name=m.name, uidvalidity=m.uidvalidity, uidnext=m.uidnext,
        highestmodseq=m.highestmodseq, messages=m.messages, unseen=m.unseen,
        special_use=m.special_use, subscribed=m.subscribed,
    )  # fmt: skip


def _summary(m: Message) -> store_pb2.MessageSummary:
    return store_pb2.MessageSummary(
        uid=m.uid, flags=list(m.flags), size=m.size, internal_date=m.internal_date,
        modseq=m.modseq, blob_id=m.blob_id,
    )  # fmt: skip


async def _rechunk(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Storage chunks re-cut to CHUNK_BYTES on the wire (the last one shorter)."""
    buf = bytearray()
    async for data in chunks:
        buf += data
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class StoreServicer(store_pb2_grpc.StoreServiceServicer):
    def __init__(
        self,
        repo: StoreRepository,
        events: EventPublisher,
        *,
        default_page_size: int = 500,
        max_page_size: int = 5000,
    ) -> None:
        self.repo = repo
        self.events = events
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
        for cls, code in _CODES.items():
            if isinstance(exc, cls):
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS):
                    log.error("store call failed", extra=kv(error=str(exc), code=code.name))
                await context.abort(code, str(exc))
        if isinstance(exc, self.repo.transient_errors):
            log.error("store backend unavailable", exc_info=exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store backend unavailable")
        log.error("store call crashed", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error in the store")
        raise AssertionError("context.abort returned")  # it raises; this satisfies mypy

    async def _call(self, context: grpc.aio.ServicerContext, op: Awaitable[T]) -> T:
        try:
            return await op
        except Exception as exc:
            await self._fail(context, exc)

    async def _stream(
        self, context: grpc.aio.ServicerContext, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[store_pb2.ContentChunk]:
        try:
            async for data in _rechunk(chunks, CHUNK_BYTES):
                metrics.CONTENT_BYTES.inc(len(data))
                yield store_pb2.ContentChunk(data=data)
        except Exception as exc:
            await self._fail(context, exc)

    async def Deliver(
        self, request: store_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.DeliverResponse:
        bind_log_context(queue_id=request.queue_id, user=request.user)
        source = request.WhichOneof("source")
        delivery = Delivery(
            queue_id=request.queue_id,
            user=request.user,
            mailbox=request.mailbox,
            content=request.content if source == "content" else None,
            blob_id=request.blob_id if source == "blob_id" else None,
            flags=tuple(request.flags),
            internal_date=request.internal_date,
        )
        r = await self._call(context, self.repo.deliver(delivery))
        metrics.DELIVERIES.labels("duplicate" if r.duplicate else "new").inc()
        log.info(
            "message delivered",
            extra=kv(mailbox=r.mailbox, uid=r.uid, duplicate=r.duplicate, created=r.created),
        )
        if r.mailbox_created:
            await self.events.publish(request.user, r.mailbox, Kind.KIND_MAILBOX_CREATED)
        if r.created:
            await self.events.publish(
                request.user, r.mailbox, Kind.KIND_MESSAGE_NEW, [r.uid], r.modseq
            )
        return store_pb2.DeliverResponse(
            uid=r.uid, uidvalidity=r.uidvalidity, duplicate=r.duplicate, mailbox=r.mailbox
        )

    async def ListMailboxes(
        self, request: store_pb2.ListMailboxesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMailboxesResponse:
        boxes = await self._call(context, self.repo.list_mailboxes(request.user))
        return store_pb2.ListMailboxesResponse(mailboxes=[_mailbox_info(m) for m in boxes])

    async def GetMailbox(
        self, request: store_pb2.GetMailboxRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.MailboxInfo:
        box = await self._call(context, self.repo.get_mailbox(request.user, request.mailbox))
        return _mailbox_info(box)

    async def ListMessages(
        self, request: store_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMessagesResponse:
        limit = min(request.limit or self.default_page_size, self.max_page_size)
        msgs, more = await self._call(
            context,
            self.repo.list_messages(request.user, request.mailbox, request.after_uid, limit),
        )
        return store_pb2.ListMessagesResponse(messages=[_summary(m) for m in msgs], more=more)

    async def GetMessageContent(
        self, request: store_pb2.GetMessageContentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.ContentChunk]:
        chunks = await self._call(
            context, self.repo.read_message(request.user, request.mailbox, request.uid)
        )
        async for chunk in self._stream(context, chunks):
            yield chunk

    async def GetBlob(
        self, request: store_pb2.GetBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.ContentChunk]:
        chunks = await self._call(context, self.repo.read_blob(request.blob_id))
        async for chunk in self._stream(context, chunks):
            yield chunk

    async def StoreFlags(
        self, request: store_pb2.StoreFlagsRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.StoreFlagsResponse:
        mode = _MODES.get(request.mode)
        if mode is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "flags mode is required")
        assert mode is not None
        r = await self._call(
            context,
            self.repo.store_flags(request.user, request.mailbox, request.uids, mode, request.flags),
        )
        # One event per resulting flag set, so each names the exact flags its UIDs now have.
        groups: dict[tuple[str, ...], list[Message]] = defaultdict(list)
        changed = set(r.changed)
        for m in r.messages:
            if m.uid in changed:
                groups[m.flags].append(m)
        mailbox = request.mailbox or "INBOX"
        for flags, msgs in groups.items():
            await self.events.publish(
                request.user, mailbox, Kind.KIND_FLAGS_CHANGED,
                [m.uid for m in msgs], max(m.modseq for m in msgs), flags,
            )  # fmt: skip
        return store_pb2.StoreFlagsResponse(updated=[_summary(m) for m in r.messages])

    async def Expunge(
        self, request: store_pb2.ExpungeRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ExpungeResponse:
        r = await self._call(
            context, self.repo.expunge(request.user, request.mailbox, list(request.uids))
        )
        if r.uids:
            metrics.EXPUNGED.inc(len(r.uids))
            await self.events.publish(
                request.user, request.mailbox or "INBOX", Kind.KIND_MESSAGE_EXPUNGED, r.uids,
                r.modseq,
            )  # fmt: skip
        return store_pb2.ExpungeResponse(expunged_uids=r.uids)

    async def PutBlob(
        self,
        request_iterator: AsyncIterable[store_pb2.ContentChunk],
        context: grpc.aio.ServicerContext,
    ) -> store_pb2.PutBlobResponse:
        async def data() -> AsyncIterator[bytes]:
            async for chunk in request_iterator:
                metrics.BLOB_UPLOAD_BYTES.inc(len(chunk.data))
                yield chunk.data

        info = await self._call(context, self.repo.put_blob(data()))
        log.info("blob stored", extra=kv(blob_id=info.blob_id, size=info.size))
        return store_pb2.PutBlobResponse(blob_id=info.blob_id, size=info.size)
