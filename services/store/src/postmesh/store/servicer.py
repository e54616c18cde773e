"""gRPC StoreService on top of a StoreRepository: protobuf in/out, status codes, events.

Every change publishes MailboxEvents after it is durable (``events.py``): MESSAGE_NEW for
Deliver/Append/Copy/Move destinations, MESSAGE_EXPUNGED for Expunge and Move sources,
FLAGS_CHANGED, and MAILBOX_CREATED/DELETED/RENAMED (a rename also announces the new name as
created, since the event has one mailbox field).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Iterable
from typing import Any, NoReturn, TypeVar

import grpc

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common import columns
from postmesh.common.grpc import CHUNK_BYTES
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.store import errors, flag_listing, metrics
from postmesh.store.contents_wire import ResponseBuilder, meta_response
from postmesh.store.events import EventPublisher, Kind
from postmesh.store.model import INBOX, CopyResult, Delivery, FlagsMode, Mailbox, Message, Quota
from postmesh.store.repository import StoreRepository
from postmesh.store.validation import mailbox_name

log = get_logger(__name__)
T = TypeVar("T")

# GetMessageContents: UIDs per call (the caller bounds the bytes; this bounds the request).
MAX_CONTENTS_UIDS = 1000
# Its first response goes out at this many octets (with the first message); each next one
# holds four times what the previous one held, up to _MAX_PACK (fewer, larger responses cost the
# gateway ~10% less CPU than 256 KiB ones; the caller has reserved the memory for every octet it
# asked for anyway). Growing from the previous response's size, not from _FIRST_FLUSH, matters:
# from 1 octet, x4 a step, the first ~10 responses of every call held one message each (ADR 42).
# A response also goes out when the backend has to read again for the next message
# (StoredContent.group_end): the caller may be waiting for what is held (ADR 52; a response
# that waited to reach 544 KiB over two more reads stalled a downloading client ~2.5 ms).
_FIRST_FLUSH = 1
_MAX_PACK = 4 * CHUNK_BYTES

_CODES: dict[type[errors.StoreError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
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
        special_use=m.special_use, subscribed=m.subscribed, deleted=m.deleted, size=m.size,
        noselect=m.noselect, has_children=m.has_children, first_recent_uid=m.first_recent_uid,
        recent=m.recent,
    )  # fmt: skip


def message_summary(m: Message) -> store_pb2.MessageSummary:
    return store_pb2.MessageSummary(
        uid=m.uid, flags=list(m.flags), size=m.size, internal_date=m.internal_date,
        modseq=m.modseq, blob_id=m.blob_id,
    )  # fmt: skip


def _quota_info(q: Quota) -> store_pb2.QuotaInfo:
    return store_pb2.QuotaInfo(
        storage_used_bytes=q.storage_used, storage_limit_bytes=q.storage_limit,
        messages_used=q.messages_used, message_limit=q.message_limit,
    )  # fmt: skip


def _copy_response(r: CopyResult) -> store_pb2.CopyMessagesResponse:
    return store_pb2.CopyMessagesResponse(
        destination_uidvalidity=r.uidvalidity, source_uids=r.source_uids,
        destination_uids=r.dest_uids, expunged_uids=r.expunged,
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


# GetSmallMessageContent's largest answer: well under the gRPC message limit, and above most
# mail (a stream's own cost is small beside a megabyte's transfer).
SMALL_CONTENT_BYTES = 1 << 20


async def _small_content(chunks: AsyncIterator[bytes], limit: int) -> store_pb2.SmallMessageContent:
    """The whole content if it is at most ``limit`` octets; else complete=false, no data, and
    the rest is not read."""
    parts: list[bytes] = []
    size = 0
    async for data in chunks:
        size += len(data)
        if size > limit:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            return store_pb2.SmallMessageContent(complete=False)
        parts.append(data)
    metrics.CONTENT_BYTES.inc(size)
    return store_pb2.SmallMessageContent(data=b"".join(parts), complete=True)


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

    # -- plumbing ----------------------------------------------------------------------------

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
        for cls, code in _CODES.items():
            if isinstance(exc, cls):
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS):
                    log.error("store call failed", extra=kv(error=str(exc), code=code.name))
                elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    metrics.QUOTA_REFUSALS.inc()
                    log.info("refused over quota", extra=kv(error=str(exc)))
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

    async def _publish(
        self,
        user: str,
        mailbox: str,
        kind: Kind.ValueType,
        uids: Iterable[int] = (),
        modseq: int = 0,
        flags: Iterable[str] = (),
    ) -> None:
        await self.events.publish(user, mailbox, kind, uids, modseq, flags)

    async def _publish_created(self, user: str, names: Iterable[str]) -> None:
        for name in names:
            await self._publish(user, name, Kind.KIND_MAILBOX_CREATED)

    async def _publish_copy(self, user: str, source: str, dest: str, r: CopyResult) -> None:
        if r.dest_uids:
            await self._publish(user, dest, Kind.KIND_MESSAGE_NEW, r.dest_uids, r.modseq)
        if r.expunged:
            metrics.EXPUNGED.inc(len(r.expunged))
            await self._publish(
                user, source, Kind.KIND_MESSAGE_EXPUNGED, r.expunged, r.source_modseq
            )

    # -- delivery ----------------------------------------------------------------------------

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
        await self._publish_created(request.user, r.created_mailboxes)
        # A redelivery announces its message again: the attempt that stored it may have lost
        # its caller or died before announcing it (or while a pending mark hid it, watermark.py),
        # and no later event need come. A session that knows the message asks nothing (ADR 50).
        await self._publish(request.user, r.mailbox, Kind.KIND_MESSAGE_NEW, [r.uid], r.modseq)
        return store_pb2.DeliverResponse(
            uid=r.uid, uidvalidity=r.uidvalidity, duplicate=r.duplicate, mailbox=r.mailbox
        )

    async def Append(
        self,
        request_iterator: AsyncIterable[store_pb2.AppendRequest],
        context: grpc.aio.ServicerContext,
    ) -> store_pb2.AppendResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Append must start with an AppendHeader"
            )
        assert first is not None
        h = first.header
        bind_log_context(user=h.user)

        async def content() -> AsyncIterator[bytes]:
            async for req in requests:
                if req.WhichOneof("part") != "chunk":
                    raise errors.InvalidArgument("Append carries one AppendHeader, then chunks")
                metrics.APPEND_BYTES.inc(len(req.chunk))
                yield req.chunk

        return await self._append(context, h, content())

    async def AppendSmall(
        self, request: store_pb2.AppendSmallRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.AppendResponse:
        h = request.header
        bind_log_context(user=h.user)
        if len(request.content) > CHUNK_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"AppendSmall carries at most {CHUNK_BYTES} octets: use Append",
            )
        metrics.APPEND_BYTES.inc(len(request.content))

        async def content() -> AsyncIterator[bytes]:
            yield request.content

        # The whole content is here: the checks before reading it would only repeat those of
        # the transaction that stores it (mailbox, quota).
        return await self._append(context, h, content(), check_first=False)

    async def _append(
        self,
        context: grpc.aio.ServicerContext,
        h: store_pb2.AppendHeader,
        content: AsyncIterator[bytes],
        *,
        check_first: bool = True,
    ) -> store_pb2.AppendResponse:
        r = await self._call(
            context,
            self.repo.append(
                h.user, h.mailbox, h.flags, h.internal_date, h.size, content,
                check_first=check_first, claim_recent=h.claim_recent,
                normalize_line_ends=h.normalize_line_ends,
            ),
        )  # fmt: skip
        log.info("message appended", extra=kv(mailbox=r.mailbox, uid=r.uid, size=h.size))
        await self._publish(h.user, r.mailbox, Kind.KIND_MESSAGE_NEW, [r.uid], r.modseq)
        return store_pb2.AppendResponse(
            uid=r.uid, uidvalidity=r.uidvalidity, modseq=r.modseq, flags=r.flags,
            first_recent_uid=r.recent_first,
        )  # fmt: skip

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

    async def GetBlob(
        self, request: store_pb2.GetBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.ContentChunk]:
        chunks = await self._call(context, self.repo.read_blob(request.blob_id))
        async for chunk in self._stream(context, chunks):
            yield chunk

    # -- mailboxes ---------------------------------------------------------------------------

    async def ProvisionUser(
        self, request: store_pb2.ProvisionUserRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMailboxesResponse:
        listing = not request.without_listing
        r = await self._call(context, self.repo.provision_user(request.user, listing=listing))
        if r.created:
            log.info("user provisioned", extra=kv(user=request.user, created=r.created))
        await self._publish_created(request.user, r.created)
        if not listing:
            return store_pb2.ListMailboxesResponse()
        subs = await self._call(context, self.repo.list_subscriptions(request.user))
        return store_pb2.ListMailboxesResponse(
            mailboxes=[_mailbox_info(m) for m in r.mailboxes], subscriptions=subs
        )

    async def ListMailboxes(
        self, request: store_pb2.ListMailboxesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMailboxesResponse:
        boxes = await self._call(context, self.repo.list_mailboxes(request.user))
        subs = await self._call(context, self.repo.list_subscriptions(request.user))
        return store_pb2.ListMailboxesResponse(
            mailboxes=[_mailbox_info(m) for m in boxes], subscriptions=subs
        )

    async def GetMailbox(
        self, request: store_pb2.GetMailboxRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.MailboxInfo:
        box = await self._call(context, self.repo.get_mailbox(request.user, request.mailbox))
        return _mailbox_info(box)

    async def CreateMailbox(
        self, request: store_pb2.CreateMailboxRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.MailboxInfo:
        r = await self._call(
            context,
            self.repo.create_mailbox(request.user, request.mailbox, request.special_use),
        )
        await self._publish_created(request.user, r.created)
        return _mailbox_info(r.mailbox)

    async def DeleteMailbox(
        self, request: store_pb2.DeleteMailboxRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.DeleteMailboxResponse:
        r = await self._call(context, self.repo.delete_mailbox(request.user, request.mailbox))
        log.info(
            "mailbox deleted",
            extra=kv(user=request.user, mailbox=request.mailbox, messages=r.messages_deleted),
        )
        names = [mailbox_name(request.mailbox), *r.removed] if r.kept_as_noselect else r.removed
        for name in names:
            await self._publish(request.user, name, Kind.KIND_MAILBOX_DELETED)
        return store_pb2.DeleteMailboxResponse(messages_deleted=r.messages_deleted)

    async def RenameMailbox(
        self, request: store_pb2.RenameMailboxRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.MailboxInfo:
        r = await self._call(
            context, self.repo.rename_mailbox(request.user, request.mailbox, request.new_name)
        )
        user = request.user
        await self._publish_created(user, r.created)
        if r.renamed and r.renamed[0][0] == INBOX:
            await self._publish_created(user, [r.mailbox.name])
            if r.moved is not None:
                await self._publish_copy(user, INBOX, r.mailbox.name, r.moved)
        else:
            for old, new in r.renamed:
                await self.events.publish(user, old, Kind.KIND_MAILBOX_RENAMED, new_name=new)
        return _mailbox_info(r.mailbox)

    async def SetSubscription(
        self, request: store_pb2.SetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.SetSubscriptionResponse:
        await self._call(
            context,
            self.repo.set_subscription(request.user, request.mailbox, request.subscribed),
        )
        return store_pb2.SetSubscriptionResponse()

    # -- messages ----------------------------------------------------------------------------

    async def ListMessages(
        self, request: store_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMessagesResponse:
        limit = min(request.limit or self.default_page_size, self.max_page_size)
        msgs, more = await self._call(
            context,
            self.repo.list_messages(request.user, request.mailbox, request.after_uid, limit),
        )
        return store_pb2.ListMessagesResponse(
            messages=[message_summary(m) for m in msgs], more=more
        )

    async def ListMessageFlags(
        self, request: store_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ListMessageFlagsResponse:
        limit = min(request.limit or flag_listing.DEFAULT_PAGE, flag_listing.MAX_PAGE)
        page = await self._call(
            context,
            self.repo.list_flags(request.user, request.mailbox, request.after_uid, limit),
        )
        if request.packed_columns:  # ADR 0075
            resp = store_pb2.ListMessageFlagsResponse(
                uids_le32=columns.pack(columns.U32, page.uids),
                modseqs_le64=columns.pack(columns.U64, page.modseqs),
                flag_set_index_le32=columns.pack(columns.U32, page.flag_index),
                more=page.more,
            )
        else:
            resp = store_pb2.ListMessageFlagsResponse(
                uids=page.uids, modseqs=page.modseqs, flag_set_index=page.flag_index,
                more=page.more,
            )  # fmt: skip
        for flags in page.flag_sets:
            resp.flag_sets.add().flags.extend(flags)
        return resp

    async def GetMessageContent(
        self, request: store_pb2.GetMessageContentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.ContentChunk]:
        chunks = await self._call(
            context, self.repo.read_message(request.user, request.mailbox, request.uid)
        )
        async for chunk in self._stream(context, chunks):
            yield chunk

    async def GetSmallMessageContent(
        self, request: store_pb2.GetSmallMessageContentRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.SmallMessageContent:
        limit = min(request.max_bytes or SMALL_CONTENT_BYTES, SMALL_CONTENT_BYTES)
        chunks = await self._call(
            context, self.repo.read_message(request.user, request.mailbox, request.uid)
        )
        return await self._call(context, _small_content(chunks, limit))

    async def GetMessageContents(  # type: ignore[override]  # serialized MessageContents
        self, request: store_pb2.GetMessageContentsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One message after the other, as GetMessageContent would send each, packed into
        responses that grow to _MAX_PACK (the first goes out with the first message: the
        caller is waiting for it); a missing one is reported in the stream instead of ending
        it (the caller's list may be stale). Responses are serialized MessageContents, made
        by ``contents_wire`` (registered with ``add_store_service``)."""
        if len(request.uids) > MAX_CONTENTS_UIDS:
            await self._fail(
                context, errors.InvalidArgument(f"at most {MAX_CONTENTS_UIDS} uids per call")
            )
        out = ResponseBuilder()
        flush_at = _FIRST_FLUSH
        try:
            async for uid, content in self.repo.read_messages(
                request.user, request.mailbox, request.uids
            ):
                if content is None:
                    out.part(uid, last=True, missing=True)
                    continue
                # One chunk behind: the last one carries last=True.
                held = b""
                first = True
                # Storage chunks as they are (at most BLOB_CHUNK_BYTES): no re-cut, no copy.
                async for data in content.chunks:
                    metrics.CONTENT_BYTES.inc(len(data))
                    if not first:
                        out.part(uid, held)
                    held, first = data, False
                    if out.octets >= flush_at:
                        flush_at = min(4 * out.octets, _MAX_PACK)
                        yield out.take()
                out.part(uid, held, last=True, wire_ready=content.wire_ready is True)
                if out.octets >= flush_at:
                    flush_at = min(4 * out.octets, _MAX_PACK)
                    yield out.take()
                elif content.group_end:
                    yield out.take()
        except Exception as exc:
            await self._fail(context, exc)
        if out:
            yield out.take()

    async def GetMessageMeta(  # type: ignore[override]  # a serialized GetMessageMetaResponse
        self, request: store_pb2.GetMessageMetaRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The stored metadata as they are, each with its UID, serialized by hand
        (``contents_wire.meta_response``, registered without a serializer by
        ``add_store_service``): no protobuf object per message (ADR 0056)."""
        found = await self._call(
            context, self.repo.get_meta(request.user, request.mailbox, request.uids)
        )
        return meta_response(found)

    async def Search(
        self, request: store_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.SearchResponse:
        r = await self._call(
            context, self.repo.search(request.user, request.mailbox, request.criteria)
        )
        return store_pb2.SearchResponse(uids=r.uids, highest_modseq=r.highest_modseq)

    async def GetChanges(
        self, request: store_pb2.GetChangesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.GetChangesResponse:
        r = await self._call(
            context, self.repo.get_changes(request.user, request.mailbox, request.since_modseq)
        )
        return store_pb2.GetChangesResponse(
            changed=[message_summary(m) for m in r.changed], expunged_uids=r.expunged,
            highestmodseq=r.highestmodseq, uidvalidity=r.uidvalidity,
            expunged_incomplete=r.expunged_incomplete, first_recent_uid=r.first_recent_uid,
        )  # fmt: skip

    async def ClaimRecent(
        self, request: store_pb2.ClaimRecentRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ClaimRecentResponse:
        r = await self._call(
            context, self.repo.claim_recent(request.user, request.mailbox, request.up_to_uid)
        )
        return store_pb2.ClaimRecentResponse(
            first_recent_uid=r.first, claimed_up_to=r.last, uidvalidity=r.uidvalidity
        )

    async def StoreFlags(
        self, request: store_pb2.StoreFlagsRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.StoreFlagsResponse:
        mode = _MODES.get(request.mode)
        if mode is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "flags mode is required")
        assert mode is not None
        r = await self._call(
            context,
            self.repo.store_flags(
                request.user, request.mailbox, request.uids, mode, request.flags,
                request.unchanged_since,
            ),
        )  # fmt: skip
        # One event per resulting flag set, so each names the exact flags its UIDs now have.
        groups: dict[tuple[str, ...], list[Message]] = defaultdict(list)
        changed = set(r.changed)
        for m in r.messages:
            if m.uid in changed:
                groups[m.flags].append(m)
        mailbox = mailbox_name(request.mailbox)
        for flags, msgs in groups.items():
            await self._publish(
                request.user, mailbox, Kind.KIND_FLAGS_CHANGED,
                [m.uid for m in msgs], max(m.modseq for m in msgs), flags,
            )  # fmt: skip
        return store_pb2.StoreFlagsResponse(
            updated=[message_summary(m) for m in r.messages], modified=r.modified
        )

    async def Expunge(
        self, request: store_pb2.ExpungeRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ExpungeResponse:
        r = await self._call(
            context, self.repo.expunge(request.user, request.mailbox, list(request.uids))
        )
        if r.uids:
            metrics.EXPUNGED.inc(len(r.uids))
            await self._publish(
                request.user, mailbox_name(request.mailbox), Kind.KIND_MESSAGE_EXPUNGED, r.uids,
                r.modseq,
            )  # fmt: skip
        return store_pb2.ExpungeResponse(expunged_uids=r.uids)

    async def CopyMessages(
        self, request: store_pb2.CopyMessagesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.CopyMessagesResponse:
        r = await self._call(
            context,
            self.repo.copy_messages(
                request.user, request.mailbox, request.uids, request.destination
            ),
        )
        await self._publish_copy(
            request.user, mailbox_name(request.mailbox), mailbox_name(request.destination), r
        )
        return _copy_response(r)

    async def MoveMessages(
        self, request: store_pb2.CopyMessagesRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.CopyMessagesResponse:
        r = await self._call(
            context,
            self.repo.move_messages(
                request.user, request.mailbox, request.uids, request.destination
            ),
        )
        await self._publish_copy(
            request.user, mailbox_name(request.mailbox), mailbox_name(request.destination), r
        )
        return _copy_response(r)

    # -- quotas ------------------------------------------------------------------------------

    async def GetQuota(
        self, request: store_pb2.GetQuotaRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.QuotaInfo:
        return _quota_info(await self._call(context, self.repo.get_quota(request.user)))

    async def SetQuota(
        self, request: store_pb2.SetQuotaRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.QuotaInfo:
        q = await self._call(
            context,
            self.repo.set_quota(request.user, request.storage_limit_bytes, request.message_limit),
        )
        log.info(
            "quota set",
            extra=kv(user=request.user, storage=q.storage_limit, messages=q.message_limit),
        )
        return _quota_info(q)

    async def Calls(
        self,
        request_iterator: AsyncIterable[store_pb2.CallRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[store_pb2.CallResponse]:
        """Served by the registration, not here: ``GrpcServer.add`` puts in its place a handler
        that passes each carried call to that method's own (guarded) handler (ADR 0051). Left
        unimplemented on a bare grpc.aio server: callers then make unary calls."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Calls needs GrpcServer.add")
        yield store_pb2.CallResponse()  # pragma: no cover  # makes this an async generator


def add_store_service(servicer: StoreServicer, server: Any) -> None:
    """``store_pb2_grpc.add_StoreServiceServicer_to_server``, except that the responses of
    GetMessageContents and GetMessageMeta go to gRPC as the servicer serialized them
    (``contents_wire``: no protobuf objects for megabytes of content, nor for a thousand
    messages' stored metadata). ``server``: a grpc.aio.Server or what stands in for one
    (``GrpcServer.add``)."""
    store_pb2_grpc.add_StoreServiceServicer_to_server(servicer, _RawContents(server))


class _RawContents:
    """Passes the generated registration on with the serializers of GetMessageContents and
    GetMessageMeta removed (gRPC, and the Calls stream, then send the bytes the methods give
    as they are)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # made again below from the handlers with the serializer removed

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        h = handlers["GetMessageContents"]
        meta = handlers["GetMessageMeta"]
        handlers = {
            **handlers,
            "GetMessageContents": grpc.unary_stream_rpc_method_handler(
                h.unary_stream, request_deserializer=h.request_deserializer
            ),
            "GetMessageMeta": grpc.unary_unary_rpc_method_handler(
                meta.unary_unary, request_deserializer=meta.request_deserializer
            ),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),)
        )
        self._server.add_registered_method_handlers(service, handlers)
