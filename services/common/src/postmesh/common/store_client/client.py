"""The gateways' one client of the store: StoreService and MaildropLockService calls with typed
results and one error mapping (:mod:`.errors`).

Every call has the per-call deadline unless it says otherwise; the channel
(:func:`postmesh.common.grpc.channel`) retries UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TypeVar, cast

import grpc
from google.protobuf.message import Message

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc, store_pb2, store_pb2_grpc
from postmesh.common import columns
from postmesh.common.backend import BackendUnavailable
from postmesh.common.grpc import CHUNK_BYTES
from postmesh.common.store_client import convert
from postmesh.common.store_client.calls import CallStream, NotCarried, carried_or_unary
from postmesh.common.store_client.errors import (
    MailboxNotFound,
    MessageNotFound,
    OverQuota,
    store_error,
)
from postmesh.common.store_client.types import (
    AppendResult,
    Changes,
    CopyResult,
    FlagPage,
    FlagsMode,
    FlagsResult,
    LockResult,
    MailboxInfo,
    MailboxTree,
    MessageMeta,
    MessagePage,
    MessageStructure,
    OpenedMaildrop,
    Quota,
    RecentClaim,
    SearchResult,
)


def _lost_status(err: grpc.aio.AioRpcError) -> bool:
    """A chunk written just as the store ended the call early: grpc.aio replaces the store's
    status (RESOURCE_EXHAUSTED, NOT_FOUND) by this one (grpc/grpc#36066)."""
    return bool(
        err.code() == grpc.StatusCode.INTERNAL and err.details() == "Internal error from Core"
    )


M = TypeVar("M", bound=Message)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# ListMessageFlags' fallback on a store that predates it lists at most this many per page.
_FALLBACK_PAGE = 5000


class StoreClient:
    """Typed calls on the store at the other end of ``ch``: a :class:`StoreAnswer` subclass
    when the store answers "no" (no such mailbox, over quota...), BackendUnavailable for any
    failure that may pass."""

    def __init__(self, ch: grpc.aio.Channel, deadline: float, *, call_stream: bool = False) -> None:
        # On an aio channel the generated stubs are the async ones (see the .pyi overloads).
        self._stub = cast(
            "store_pb2_grpc.StoreServiceAsyncStub", store_pb2_grpc.StoreServiceStub(ch)
        )
        self._locks = cast(
            "queue_pb2_grpc.MaildropLockServiceAsyncStub",
            queue_pb2_grpc.MaildropLockServiceStub(ch),
        )
        self._deadline = deadline
        self._channel = ch
        self._small_content = True  # the store has GetSmallMessageContent (until it says no)
        self._claims_recent = True  # the store has ClaimRecent (until it says no)
        self._open_maildrop = True  # the store has OpenMaildrop (until it says no)
        self._small_append = True  # ... and AppendSmall
        # The frequent small calls as messages on one stream (ADR 0051), when asked for.
        self._calls = CallStream(self._stub.Calls) if call_stream else None

    async def _unary(
        self, method: str, req: Message, response_type: type[M], *, idempotent: bool = True
    ) -> M:
        """``method`` of StoreService: on the call stream when there is one and it answers,
        else as a unary call. Raises grpc.aio.AioRpcError as the unary call does. A call that
        is not ``idempotent`` is not made again when the stream failed after sending it (the
        store may have done it): BackendUnavailable."""
        try:
            return await carried_or_unary(
                self._calls, getattr(self._stub, method), method, req, response_type,
                self._deadline, idempotent=idempotent,
            )  # fmt: skip
        except NotCarried as e:
            raise BackendUnavailable(f"store {method}: the call stream failed") from e

    async def close(self) -> None:
        """Close the channel (when the client owns it)."""
        if self._calls is not None:
            await self._calls.close()
        await self._channel.close()

    # -- users and mailboxes -----------------------------------------------------------------

    async def provision_user(self, user: str) -> None:
        # A login needs the user to exist, not the listing (which counts every message).
        req = store_pb2.ProvisionUserRequest(user=user, without_listing=True)
        try:
            await self._stub.ProvisionUser(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("ProvisionUser", e, user) from e

    async def get_mailbox(self, user: str, mailbox: str) -> MailboxInfo:
        req = store_pb2.GetMailboxRequest(user=user, mailbox=mailbox)
        try:
            return convert.mailbox(await self._unary("GetMailbox", req, store_pb2.MailboxInfo))
        except grpc.aio.AioRpcError as e:
            raise store_error("GetMailbox", e, mailbox) from e

    async def list_mailbox_tree(self, user: str) -> MailboxTree:
        """Every mailbox (\\Noselect parents too) and the subscribed names."""
        req = store_pb2.ListMailboxesRequest(user=user)
        try:
            resp = await self._stub.ListMailboxes(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("ListMailboxes", e, user) from e
        return MailboxTree([convert.mailbox(m) for m in resp.mailboxes], list(resp.subscriptions))

    async def list_mailboxes(self, user: str) -> Sequence[MailboxInfo]:
        return (await self.list_mailbox_tree(user)).mailboxes

    async def create_mailbox(self, user: str, mailbox: str, special_use: str = "") -> MailboxInfo:
        req = store_pb2.CreateMailboxRequest(user=user, mailbox=mailbox, special_use=special_use)
        try:
            return convert.mailbox(await self._stub.CreateMailbox(req, timeout=self._deadline))
        except grpc.aio.AioRpcError as e:
            raise store_error("CreateMailbox", e, mailbox) from e

    async def delete_mailbox(self, user: str, mailbox: str) -> int:
        """How many messages went."""
        req = store_pb2.DeleteMailboxRequest(user=user, mailbox=mailbox)
        try:
            resp = await self._stub.DeleteMailbox(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("DeleteMailbox", e, mailbox) from e
        return int(resp.messages_deleted)

    async def rename_mailbox(self, user: str, mailbox: str, new_name: str) -> MailboxInfo:
        req = store_pb2.RenameMailboxRequest(user=user, mailbox=mailbox, new_name=new_name)
        try:
            return convert.mailbox(await self._stub.RenameMailbox(req, timeout=self._deadline))
        except grpc.aio.AioRpcError as e:
            raise store_error("RenameMailbox", e, mailbox) from e

    async def set_subscription(self, user: str, mailbox: str, subscribed: bool) -> None:
        req = store_pb2.SetSubscriptionRequest(user=user, mailbox=mailbox, subscribed=subscribed)
        try:
            await self._stub.SetSubscription(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("SetSubscription", e, mailbox) from e

    async def get_quota(self, user: str) -> Quota:
        req = store_pb2.GetQuotaRequest(user=user)
        try:
            q = await self._stub.GetQuota(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("GetQuota", e, user) from e
        return Quota(q.storage_used_bytes, q.storage_limit_bytes, q.messages_used, q.message_limit)

    # -- reading messages --------------------------------------------------------------------

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> MessagePage:
        req = store_pb2.ListMessagesRequest(
            user=user, mailbox=mailbox, after_uid=after_uid, limit=limit
        )
        try:
            resp = await self._unary("ListMessages", req, store_pb2.ListMessagesResponse)
        except grpc.aio.AioRpcError as e:
            raise store_error("ListMessages", e, mailbox) from e
        return MessagePage([convert.meta(m) for m in resp.messages], resp.more)

    async def list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagPage:
        req = store_pb2.ListMessagesRequest(
            user=user, mailbox=mailbox, after_uid=after_uid, limit=limit, packed_columns=True
        )
        try:
            resp = await self._unary("ListMessageFlags", req, store_pb2.ListMessageFlagsResponse)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A store from before ListMessageFlags (rolling upgrade): the full listing.
                return await self._flags_from_listing(user, mailbox, after_uid, limit)
            raise store_error("ListMessageFlags", e, mailbox) from e
        try:
            if resp.uids_le32 or resp.modseqs_le64 or resp.flag_set_index_le32:
                # The byte columns straight into typed arrays: one copy each (ADR 0075).
                uids = columns.unpack(columns.U32, resp.uids_le32)
                modseqs = columns.unpack(columns.U64, resp.modseqs_le64)
                index = columns.unpack(columns.U32, resp.flag_set_index_le32)
            else:  # a store from before the byte columns, or an empty page
                uids = array(columns.U32, resp.uids)
                modseqs = array(columns.U64, resp.modseqs)
                index = array(columns.U32, resp.flag_set_index)
        except ValueError as e:
            raise BackendUnavailable(f"store sent a malformed ListMessageFlags page: {e}") from e
        page = FlagPage(uids, modseqs, index, [tuple(s.flags) for s in resp.flag_sets], resp.more)
        n = len(page.uids)
        if (
            len(page.modseqs) != n
            or len(page.flag_index) != n
            or (n and max(page.flag_index) >= len(page.flag_sets))
        ):
            raise BackendUnavailable("store sent an inconsistent ListMessageFlags page")
        return page

    async def _flags_from_listing(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> FlagPage:
        page = await self.list_messages(user, mailbox, after_uid, min(limit, _FALLBACK_PAGE))
        sets: dict[tuple[str, ...], int] = {}
        index = [sets.setdefault(m.flags, len(sets)) for m in page.messages]
        return FlagPage(
            [m.uid for m in page.messages], [m.modseq for m in page.messages], index,
            list(sets), page.more,
        )  # fmt: skip

    async def stream_content(
        self, user: str, mailbox: str, uid: int, *, timeout: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The raw message in the store's chunks; ``timeout`` for the whole stream (default: the
        per-call deadline). Stopping early ends the stream rather than let the store push the
        rest (POP3 TOP). Raises MessageNotFound or BackendUnavailable while iterating."""
        req = store_pb2.GetMessageContentRequest(user=user, mailbox=mailbox, uid=uid)
        call = self._stub.GetMessageContent(req, timeout=timeout or self._deadline)
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as e:
            raise store_error("GetMessageContent", e, uid) from e
        finally:
            call.cancel()

    async def read_contents(
        self, user: str, mailbox: str, uids: Sequence[int], *, timeout: float | None = None
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        """Whole messages in the order of ``uids``, in one stream (GetMessageContents): (uid,
        content, whether the store says it is in wire form: every line ends in CRLF and none
        begins with "."), or (uid, None, False) for one the store no longer has. Each message
        is held whole: the caller bounds the memory by the uids it asks for. ``timeout``
        covers the whole stream. Raises BackendUnavailable while iterating."""
        req = store_pb2.GetMessageContentsRequest(user=user, mailbox=mailbox, uids=list(uids))
        call = self._stub.GetMessageContents(req, timeout=timeout or self._deadline)
        parts: list[bytes] = []
        try:
            async for resp in call:
                for part in resp.parts:
                    if part.missing:
                        parts.clear()
                        yield part.uid, None, False
                        continue
                    parts.append(part.data)
                    if part.last:
                        data = parts[0] if len(parts) == 1 else b"".join(parts)
                        parts.clear()
                        yield part.uid, data, part.wire_ready
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise store_error("GetMessageContents", e, mailbox) from e
            # A store from before GetMessageContents (rolling upgrade): one call per message.
            for uid in uids:
                try:
                    yield uid, await self.get_content(user, mailbox, uid), False
                except MessageNotFound:
                    yield uid, None, False
        finally:
            call.cancel()

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        """The whole raw message. Raises MessageNotFound.

        One unary call for a message of up to 1 MiB (most mail), a stream for a larger one or
        from a store that predates GetSmallMessageContent (ADR 0039)."""
        req = store_pb2.GetSmallMessageContentRequest(user=user, mailbox=mailbox, uid=uid)
        if self._small_content:
            try:
                resp = await self._unary(
                    "GetSmallMessageContent", req, store_pb2.SmallMessageContent
                )
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise store_error("GetSmallMessageContent", e, uid) from e
                self._small_content = False  # a store from before it (rolling upgrade)
            else:
                if resp.complete:
                    return bytes(resp.data)
        return b"".join([c async for c in self.stream_content(user, mailbox, uid)])

    async def get_structure(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> Sequence[MessageStructure]:
        req = store_pb2.GetMessageMetaRequest(user=user, mailbox=mailbox, uids=list(uids))
        try:
            resp = await self._unary("GetMessageMeta", req, store_pb2.GetMessageMetaResponse)
        except grpc.aio.AioRpcError as e:
            raise store_error("GetMessageMeta", e, mailbox) from e
        return [convert.structure(m) for m in resp.messages]

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        req = store_pb2.GetChangesRequest(user=user, mailbox=mailbox, since_modseq=since_modseq)
        try:
            resp = await self._unary("GetChanges", req, store_pb2.GetChangesResponse)
        except grpc.aio.AioRpcError as e:
            raise store_error("GetChanges", e, mailbox) from e
        return Changes(
            [convert.meta(m) for m in resp.changed], list(resp.expunged_uids),
            resp.highestmodseq, resp.uidvalidity, resp.expunged_incomplete,
            resp.first_recent_uid,
        )  # fmt: skip

    async def claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim | None:
        """Claim \\Recent for the calling session (RFC 3501 §2.3.2) up to ``up_to_uid`` (0: every
        message now). None from a store that predates ClaimRecent (a rolling upgrade): nothing
        is recent then, as before."""
        if not self._claims_recent:
            return None
        req = store_pb2.ClaimRecentRequest(user=user, mailbox=mailbox, up_to_uid=up_to_uid)
        try:
            resp = await self._unary("ClaimRecent", req, store_pb2.ClaimRecentResponse)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._claims_recent = False
                return None
            raise store_error("ClaimRecent", e, mailbox) from e
        return RecentClaim(resp.first_recent_uid, resp.claimed_up_to, resp.uidvalidity)

    async def search_proto(
        self, user: str, mailbox: str, criteria: store_pb2.SearchKey
    ) -> SearchResult:
        """SEARCH with criteria already in the store's form (imap-gw's ``search_proto``)."""
        req = store_pb2.SearchRequest(user=user, mailbox=mailbox, criteria=criteria)
        try:
            resp = await self._unary("Search", req, store_pb2.SearchResponse)
        except grpc.aio.AioRpcError as e:
            raise store_error("Search", e, mailbox) from e
        return SearchResult(list(resp.uids), resp.highest_modseq)

    # -- changing messages -------------------------------------------------------------------

    async def _store_flags(self, req: store_pb2.StoreFlagsRequest) -> store_pb2.StoreFlagsResponse:
        try:
            return await self._unary("StoreFlags", req, store_pb2.StoreFlagsResponse)
        except grpc.aio.AioRpcError as e:
            raise store_error("StoreFlags", e, req.mailbox) from e

    async def store_flags(
        self, user: str, mailbox: str, uids: Sequence[int], mode: FlagsMode, flags: Sequence[str]
    ) -> Sequence[MessageMeta]:
        """The messages' metadata after the change."""
        req = store_pb2.StoreFlagsRequest(
            user=user, mailbox=mailbox, uids=list(uids), mode=convert.MODES[mode],
            flags=list(flags),
        )  # fmt: skip
        return [convert.meta(m) for m in (await self._store_flags(req)).updated]

    async def store_flags_unchanged_since(
        self,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        mode: FlagsMode,
        flags: Sequence[str],
        unchanged_since: int,
    ) -> FlagsResult:
        """STORE with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
        req = store_pb2.StoreFlagsRequest(
            user=user, mailbox=mailbox, uids=list(uids), mode=convert.MODES[mode],
            flags=list(flags), unchanged_since=unchanged_since,
        )  # fmt: skip
        resp = await self._store_flags(req)
        return FlagsResult([convert.meta(m) for m in resp.updated], list(resp.modified))

    async def expunge(self, user: str, mailbox: str) -> Sequence[int]:
        """Removes every message flagged \\Deleted; their UIDs."""
        return await self._expunge(store_pb2.ExpungeRequest(user=user, mailbox=mailbox))

    async def expunge_uids(self, user: str, mailbox: str, uids: Sequence[int]) -> Sequence[int]:
        """Removes those of ``uids`` flagged \\Deleted (RFC 4315 UID EXPUNGE); their UIDs."""
        if not uids:
            return []  # an empty list would mean "every \\Deleted message" to the store
        req = store_pb2.ExpungeRequest(user=user, mailbox=mailbox, uids=list(uids))
        return await self._expunge(req)

    async def _expunge(self, req: store_pb2.ExpungeRequest) -> list[int]:
        try:
            resp = await self._stub.Expunge(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error("Expunge", e, req.mailbox) from e
        return list(resp.expunged_uids)

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Sequence[str],
        internal_date: int,
        size: int,
        content: AsyncIterator[bytes],
        *,
        claim_recent: bool = False,
        normalize_line_ends: bool = False,
    ) -> AppendResult:
        """APPEND: ``content`` (``size`` octets) is written chunk by chunk as it arrives (no
        whole-message buffer); an error it raises cancels the call and propagates.
        ``claim_recent``: the caller has the mailbox selected and claims \\Recent up to the new
        message in the same write (``AppendResult.recent_first``). ``normalize_line_ends``: the
        store keeps bare LFs as CRLF (an IMAP literal; not a literal8). On the
        call stream a message of at most one chunk goes whole in one AppendSmall (ADR 0051):
        read to its end first (errors propagate as before, nothing is stored)."""
        if self._calls is not None and self._small_append and size <= CHUNK_BYTES:
            data = b"".join([c async for c in content])
            header = store_pb2.AppendHeader(
                user=user, mailbox=mailbox, flags=list(flags), internal_date=internal_date,
                size=size, claim_recent=claim_recent, normalize_line_ends=normalize_line_ends,
            )  # fmt: skip
            req = store_pb2.AppendSmallRequest(header=header, content=data)
            try:
                # Not repeated when its outcome is unknown: it could store a second copy.
                resp = await self._unary(
                    "AppendSmall", req, store_pb2.AppendResponse, idempotent=False
                )
                return convert.appended(resp)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise store_error("Append", e, mailbox) from e
                self._small_append = False  # a store from before it (rolling upgrade)
            content = _once(data)
        # The deadline covers a slow client's upload too, so it is not the per-call one.
        call = self._stub.Append()
        header = store_pb2.AppendHeader(
            user=user, mailbox=mailbox, flags=list(flags), internal_date=internal_date, size=size,
            claim_recent=claim_recent, normalize_line_ends=normalize_line_ends,
        )  # fmt: skip
        try:
            try:
                await call.write(store_pb2.AppendRequest(header=header))
                async for chunk in content:
                    await call.write(store_pb2.AppendRequest(chunk=chunk))
                await call.done_writing()
            except asyncio.InvalidStateError:
                pass  # the store ended the call early (quota, mailbox): its status says why
            try:
                async with asyncio.timeout(self._deadline):
                    resp = await call
            except TimeoutError:
                call.cancel()
                raise BackendUnavailable("store Append timed out") from None
        except grpc.aio.AioRpcError as e:
            if _lost_status(e):
                raise await self._append_refusal(user, mailbox, size, e) from e
            raise store_error("Append", e, mailbox) from e
        except BaseException:
            call.cancel()  # the client's side failed (gone, bad input): nothing is stored
            raise
        return convert.appended(resp)

    async def _append_refusal(
        self, user: str, mailbox: str, size: int, err: grpc.aio.AioRpcError
    ) -> Exception:
        """Why the store ended an Append whose status grpc.aio lost (``_lost_status``): its
        checks at the header, asked again (the mailbox, then the quota); else unavailable."""
        try:
            await self.get_mailbox(user, mailbox)
            q = await self.get_quota(user)
        except MailboxNotFound as e:
            return e
        except BackendUnavailable:
            return store_error("Append", err, mailbox)
        if (q.storage_limit and q.storage_used + size > q.storage_limit) or (
            q.message_limit and q.messages_used + 1 > q.message_limit
        ):
            return OverQuota("quota exceeded")
        return store_error("Append", err, mailbox)

    async def _copy(
        self, rpc: str, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        req = store_pb2.CopyMessagesRequest(
            user=user, mailbox=mailbox, uids=list(uids), destination=destination
        )
        try:
            resp = await getattr(self._stub, rpc)(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error(rpc, e, destination) from e
        return CopyResult(
            resp.destination_uidvalidity,
            list(resp.source_uids),
            list(resp.destination_uids),
            list(resp.expunged_uids),
        )

    async def copy_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        """COPY, all or nothing. NOT_FOUND names ``destination`` (the source was selected)."""
        return await self._copy("CopyMessages", user, mailbox, uids, destination)

    async def move_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        """MOVE (RFC 6851): a copy, then the sources expunged (``expunged_uids``)."""
        return await self._copy("MoveMessages", user, mailbox, uids, destination)

    # -- maildrop locks (POP3, RFC 1939 §8) --------------------------------------------------

    async def _lock_call(self, rpc: str, req: queue_pb2.MaildropLockRequest) -> object:
        try:
            return await getattr(self._locks, rpc)(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise store_error(f"MaildropLock.{rpc}", e, req.user) from e

    async def acquire_lock(self, user: str, owner: str, lease_seconds: int) -> LockResult:
        req = queue_pb2.MaildropLockRequest(user=user, owner=owner, lease_seconds=lease_seconds)
        resp = cast(queue_pb2.MaildropLockResponse, await self._lock_call("Acquire", req))
        return LockResult(resp.granted, resp.holder)

    async def open_maildrop(
        self, user: str, owner: str, lease_seconds: int, mailbox: str, limit: int
    ) -> OpenedMaildrop | None:
        """Acquire the maildrop lock and, when granted, read ``mailbox``'s UIDVALIDITY and first
        ``limit`` messages under it, in one call (ADR 0057). None from a store from before
        OpenMaildrop (the caller then acquires and lists itself); later calls skip asking."""
        if not self._open_maildrop:
            return None
        req = queue_pb2.OpenMaildropRequest(
            lock=queue_pb2.MaildropLockRequest(user=user, owner=owner, lease_seconds=lease_seconds),
            mailbox=mailbox,
            limit=limit,
        )
        try:
            resp = await self._locks.OpenMaildrop(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._open_maildrop = False  # a store from before it (rolling upgrade)
                return None
            raise store_error("MaildropLock.OpenMaildrop", e, user) from e
        lock = LockResult(resp.lock.granted, resp.lock.holder)
        if not resp.mailbox_found:
            return OpenedMaildrop(lock)
        page = MessagePage([convert.meta(m) for m in resp.page.messages], resp.page.more)
        return OpenedMaildrop(lock, resp.uidvalidity, page)

    async def renew_lock(self, user: str, owner: str, lease_seconds: int) -> bool:
        """False when the lock was lost (it expired and another session took it)."""
        req = queue_pb2.MaildropLockRequest(user=user, owner=owner, lease_seconds=lease_seconds)
        resp = cast(queue_pb2.MaildropLockResponse, await self._lock_call("Renew", req))
        return bool(resp.granted)

    async def release_lock(self, user: str, owner: str) -> None:
        await self._lock_call("Release", queue_pb2.MaildropLockRequest(user=user, owner=owner))
