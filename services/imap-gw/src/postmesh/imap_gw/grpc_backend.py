"""The backend interfaces on the store and auth gRPC services."""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.backend import BackendUnavailable, PasswordChecker, unavailable
from postmesh.common.logging import get_logger
from postmesh.imap_gw.backend import (
    Address,
    AppendResult,
    BodyPart,
    Changes,
    CopyResult,
    Envelope,
    FlagPage,
    FlagsMode,
    FlagsResult,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxNotFound,
    MailboxRejected,
    MailboxTree,
    MessageMeta,
    MessageNotFound,
    MessagePage,
    MessageStructure,
    OverQuota,
    Quota,
    SearchRejected,
    SearchResult,
    StoreRefused,
)
from postmesh.imap_gw.parser.search import SearchKey
from postmesh.imap_gw.search_proto import to_proto

log = get_logger(__name__)

_MODES = {
    FlagsMode.ADD: store_pb2.FLAGS_MODE_ADD,
    FlagsMode.REMOVE: store_pb2.FLAGS_MODE_REMOVE,
    FlagsMode.REPLACE: store_pb2.FLAGS_MODE_REPLACE,
}


_unavailable = unavailable


def _mailbox(info: store_pb2.MailboxInfo) -> MailboxInfo:
    return MailboxInfo(
        name=info.name,
        uidvalidity=info.uidvalidity,
        uidnext=info.uidnext,
        messages=info.messages,
        unseen=info.unseen,
        highestmodseq=info.highestmodseq,
        special_use=info.special_use,
        subscribed=info.subscribed,
        deleted=info.deleted,
        size=info.size,
        noselect=info.noselect,
        has_children=info.has_children,
    )


def _meta(m: store_pb2.MessageSummary) -> MessageMeta:
    return MessageMeta(
        uid=m.uid,
        flags=tuple(m.flags),
        size=m.size,
        internal_date=m.internal_date,
        modseq=m.modseq,
    )


def _addresses(addrs: Iterable[store_pb2.Address]) -> tuple[Address, ...]:
    return tuple(Address(a.name, a.adl, a.mailbox, a.host) for a in addrs)


def envelope(env: store_pb2.Envelope) -> Envelope:
    return Envelope(
        date=env.date if env.has_date else None,
        subject=env.subject if env.has_subject else None,
        from_=_addresses(getattr(env, "from")),
        sender=_addresses(env.sender),
        reply_to=_addresses(env.reply_to),
        to=_addresses(env.to),
        cc=_addresses(env.cc),
        bcc=_addresses(env.bcc),
        in_reply_to=env.in_reply_to if env.has_in_reply_to else None,
        message_id=env.message_id if env.has_message_id else None,
    )


def body_part(p: store_pb2.BodyPart) -> BodyPart:
    """The proto BodyPart as the session's typed one; proto3 strings have no presence, so an
    empty id/description/md5/disposition/location is an absent one (NIL)."""
    is_message = p.HasField("message_body")
    return BodyPart(
        type=p.type,
        subtype=p.subtype,
        params=tuple((b.name, b.value) for b in p.params),
        id=p.id or None,
        description=p.description or None,
        encoding=p.encoding or "7BIT",
        size=p.size,
        lines=p.lines,
        md5=p.md5 or None,
        disposition=p.disposition or None,
        disposition_params=tuple((b.name, b.value) for b in p.disposition_params),
        language=tuple(p.language),
        location=p.location or None,
        parts=tuple(body_part(c) for c in p.parts),
        message_envelope=envelope(p.message_envelope) if is_message else None,
        message_body=body_part(p.message_body) if is_message else None,
        header_offset=p.header_offset,
        body_offset=p.body_offset,
    )


def structure(m: store_pb2.MessageMeta) -> MessageStructure:
    return MessageStructure(
        m.uid, m.header, lambda: envelope(m.envelope), lambda: body_part(m.body)
    )


def _mailbox_error(rpc: str, mailbox: str, e: grpc.aio.AioRpcError) -> Exception:
    """The store's mailbox-management errors as the session's exceptions."""
    code = e.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return MailboxNotFound(mailbox)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return MailboxExists(e.details() or mailbox)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MailboxRejected(e.details() or "invalid mailbox name")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        # DELETE of a \Noselect name with inferiors (INBOX is refused before the call).
        return MailboxHasChildren(e.details() or mailbox)
    return _unavailable(rpc, e)


class GrpcMailboxAdmin:
    """The mailbox-management half of the MailStore (CREATE, DELETE, RENAME, subscriptions,
    LIST-EXTENDED's listing, quota); GrpcMailStore inherits it."""

    _stub: store_pb2_grpc.StoreServiceAsyncStub
    _deadline: float

    async def create_mailbox(self, user: str, mailbox: str, special_use: str = "") -> MailboxInfo:
        req = store_pb2.CreateMailboxRequest(user=user, mailbox=mailbox, special_use=special_use)
        try:
            return _mailbox(await self._stub.CreateMailbox(req, timeout=self._deadline))
        except grpc.aio.AioRpcError as e:
            raise _mailbox_error("CreateMailbox", mailbox, e) from e

    async def delete_mailbox(self, user: str, mailbox: str) -> int:
        req = store_pb2.DeleteMailboxRequest(user=user, mailbox=mailbox)
        try:
            resp = await self._stub.DeleteMailbox(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _mailbox_error("DeleteMailbox", mailbox, e) from e
        return int(resp.messages_deleted)

    async def rename_mailbox(self, user: str, mailbox: str, new_name: str) -> MailboxInfo:
        req = store_pb2.RenameMailboxRequest(user=user, mailbox=mailbox, new_name=new_name)
        try:
            return _mailbox(await self._stub.RenameMailbox(req, timeout=self._deadline))
        except grpc.aio.AioRpcError as e:
            raise _mailbox_error("RenameMailbox", mailbox, e) from e

    async def set_subscription(self, user: str, mailbox: str, subscribed: bool) -> None:
        req = store_pb2.SetSubscriptionRequest(user=user, mailbox=mailbox, subscribed=subscribed)
        try:
            await self._stub.SetSubscription(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _mailbox_error("SetSubscription", mailbox, e) from e

    async def list_mailbox_tree(self, user: str) -> MailboxTree:
        req = store_pb2.ListMailboxesRequest(user=user)
        try:
            resp = await self._stub.ListMailboxes(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("ListMailboxes", e) from e
        return MailboxTree([_mailbox(m) for m in resp.mailboxes], list(resp.subscriptions))

    async def get_quota(self, user: str) -> Quota:
        req = store_pb2.GetQuotaRequest(user=user)
        try:
            q = await self._stub.GetQuota(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("GetQuota", e) from e
        return Quota(q.storage_used_bytes, q.storage_limit_bytes, q.messages_used, q.message_limit)


def _write_error(call: str, e: grpc.aio.AioRpcError, mailbox: str) -> Exception:
    """The store's status codes for Append/Copy/Move (``store/servicer.py``) as exceptions."""
    code = e.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return MailboxNotFound(mailbox)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverQuota(e.details() or "quota exceeded")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return StoreRefused(e.details() or "refused by the store")
    return _unavailable(call, e)


class GrpcMailStore(GrpcMailboxAdmin):
    """:class:`~postmesh.imap_gw.backend.MailStore` on StoreService.

    NOT_FOUND from the store means "no such mailbox/message"; every other failure is temporary.
    """

    def __init__(self, stub: store_pb2_grpc.StoreServiceAsyncStub, deadline: float) -> None:
        self._stub = stub
        self._deadline = deadline

    async def get_mailbox(self, user: str, mailbox: str) -> MailboxInfo:
        req = store_pb2.GetMailboxRequest(user=user, mailbox=mailbox)
        try:
            return _mailbox(await self._stub.GetMailbox(req, timeout=self._deadline))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("GetMailbox", e) from e

    async def provision_user(self, user: str) -> None:
        try:
            await self._stub.ProvisionUser(
                store_pb2.ProvisionUserRequest(user=user), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as e:
            raise _unavailable("ProvisionUser", e) from e

    async def list_mailboxes(self, user: str) -> Sequence[MailboxInfo]:
        req = store_pb2.ListMailboxesRequest(user=user)
        try:
            resp = await self._stub.ListMailboxes(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("ListMailboxes", e) from e
        return [_mailbox(m) for m in resp.mailboxes]

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> MessagePage:
        req = store_pb2.ListMessagesRequest(
            user=user, mailbox=mailbox, after_uid=after_uid, limit=limit
        )
        try:
            resp = await self._stub.ListMessages(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("ListMessages", e) from e
        return MessagePage([_meta(m) for m in resp.messages], resp.more)

    async def list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagPage:
        req = store_pb2.ListMessagesRequest(
            user=user, mailbox=mailbox, after_uid=after_uid, limit=limit
        )
        try:
            resp = await self._stub.ListMessageFlags(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                # A store from before ListMessageFlags (rolling upgrade): the full listing.
                return await self._flags_from_listing(user, mailbox, after_uid, limit)
            raise _unavailable("ListMessageFlags", e) from e
        # Packed columns straight into typed arrays: no object per message.
        page = FlagPage(
            array("I", resp.uids),
            array("Q", resp.modseqs),
            array("I", resp.flag_set_index),
            [tuple(s.flags) for s in resp.flag_sets],
            resp.more,
        )
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
        page = await self.list_messages(user, mailbox, after_uid, min(limit, 5000))
        sets: dict[tuple[str, ...], int] = {}
        index = [sets.setdefault(m.flags, len(sets)) for m in page.messages]
        return FlagPage(
            [m.uid for m in page.messages], [m.modseq for m in page.messages], index,
            list(sets), page.more,
        )  # fmt: skip

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        req = store_pb2.GetMessageContentRequest(user=user, mailbox=mailbox, uid=uid)
        parts: list[bytes] = []
        try:
            async for chunk in self._stub.GetMessageContent(req, timeout=self._deadline):
                parts.append(chunk.data)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MessageNotFound(uid) from e
            raise _unavailable("GetMessageContent", e) from e
        return b"".join(parts)

    async def get_structure(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> Sequence[MessageStructure]:
        req = store_pb2.GetMessageMetaRequest(user=user, mailbox=mailbox, uids=list(uids))
        try:
            resp = await self._stub.GetMessageMeta(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("GetMessageMeta", e) from e
        return [structure(m) for m in resp.messages]

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        req = store_pb2.GetChangesRequest(user=user, mailbox=mailbox, since_modseq=since_modseq)
        try:
            resp = await self._stub.GetChanges(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("GetChanges", e) from e
        return Changes(
            [_meta(m) for m in resp.changed], list(resp.expunged_uids), resp.highestmodseq,
            resp.uidvalidity,
        )  # fmt: skip

    async def store_flags(
        self, user: str, mailbox: str, uids: Sequence[int], mode: FlagsMode, flags: Sequence[str]
    ) -> Sequence[MessageMeta]:
        req = store_pb2.StoreFlagsRequest(
            user=user, mailbox=mailbox, uids=list(uids), mode=_MODES[mode], flags=list(flags)
        )
        try:
            resp = await self._stub.StoreFlags(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("StoreFlags", e) from e
        return [_meta(m) for m in resp.updated]

    async def expunge(self, user: str, mailbox: str) -> Sequence[int]:
        req = store_pb2.ExpungeRequest(user=user, mailbox=mailbox)
        try:
            resp = await self._stub.Expunge(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("Expunge", e) from e
        return list(resp.expunged_uids)

    async def expunge_uids(self, user: str, mailbox: str, uids: Sequence[int]) -> Sequence[int]:
        if not uids:
            return []  # an empty list would mean "every \\Deleted message" to the store
        req = store_pb2.ExpungeRequest(user=user, mailbox=mailbox, uids=list(uids))
        try:
            resp = await self._stub.Expunge(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("Expunge", e) from e
        return list(resp.expunged_uids)

    async def store_flags_unchanged_since(
        self,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        mode: FlagsMode,
        flags: Sequence[str],
        unchanged_since: int,
    ) -> FlagsResult:
        req = store_pb2.StoreFlagsRequest(
            user=user, mailbox=mailbox, uids=list(uids), mode=_MODES[mode], flags=list(flags),
            unchanged_since=unchanged_since,
        )  # fmt: skip
        try:
            resp = await self._stub.StoreFlags(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            raise _unavailable("StoreFlags", e) from e
        return FlagsResult([_meta(m) for m in resp.updated], list(resp.modified))

    async def search(self, user: str, mailbox: str, criteria: SearchKey) -> SearchResult:
        req = store_pb2.SearchRequest(user=user, mailbox=mailbox, criteria=to_proto(criteria))
        try:
            resp = await self._stub.Search(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MailboxNotFound(mailbox) from e
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise SearchRejected(e.details() or "invalid search criteria") from e
            raise _unavailable("Search", e) from e
        return SearchResult(list(resp.uids), resp.highest_modseq)

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Sequence[str],
        internal_date: int,
        size: int,
        content: AsyncIterator[bytes],
    ) -> AppendResult:
        # Written chunk by chunk as the client's literal arrives (no whole-message buffer).
        # The deadline covers a slow client's upload too, so it is not the per-call one.
        call = self._stub.Append()
        header = store_pb2.AppendHeader(
            user=user, mailbox=mailbox, flags=list(flags), internal_date=internal_date, size=size
        )
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
            raise _write_error("Append", e, mailbox) from e
        except BaseException:
            call.cancel()  # the client's side failed (gone, bad input): nothing is stored
            raise
        return AppendResult(resp.uidvalidity, resp.uid)

    async def _copy(
        self, rpc: str, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        req = store_pb2.CopyMessagesRequest(
            user=user, mailbox=mailbox, uids=list(uids), destination=destination
        )
        try:
            resp = await getattr(self._stub, rpc)(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _write_error(rpc, e, destination) from e
        return CopyResult(
            resp.destination_uidvalidity,
            list(resp.source_uids),
            list(resp.destination_uids),
            list(resp.expunged_uids),
        )

    async def copy_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        return await self._copy("CopyMessages", user, mailbox, uids, destination)

    async def move_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        return await self._copy("MoveMessages", user, mailbox, uids, destination)


class GrpcAuthenticator:
    """:class:`~postmesh.imap_gw.backend.Authenticator` on AuthService.Authenticate."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceAsyncStub, deadline: float) -> None:
        self._checker = PasswordChecker(stub, "imap", deadline)  # type: ignore[arg-type]

    async def authenticate(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        return await self._checker.check(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )
