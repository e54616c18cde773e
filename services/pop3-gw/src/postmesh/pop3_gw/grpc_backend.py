""":class:`~postmesh.pop3_gw.backend.MailBackend` on the AuthService and StoreService gRPC APIs."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import grpc

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc, store_pb2, store_pb2_grpc
from postmesh.common.backend import PasswordChecker, unavailable
from postmesh.common.grpc import channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger
from postmesh.pop3_gw.backend import (
    INBOX,
    LockResult,
    Maildrop,
    MessageGone,
    MessageInfo,
)

log = get_logger(__name__)

# Streaming a message to a slow client holds the gRPC stream open; its deadline grows with the
# size, assuming the client reads at least this fast (a slower one loses the connection, no mail).
_MIN_CLIENT_BYTES_PER_SECOND = 64 * 1024


_unavailable = unavailable


class GrpcBackend:
    """NOT_FOUND from the store means "no such mailbox/message"; every other failure is
    temporary (-ERR [SYS/TEMP])."""

    def __init__(
        self,
        store_address: str,
        auth_address: str,
        deadline: float,
        page_size: int,
        security: GrpcSecurity,
    ) -> None:
        self._store_channel = channel(store_address, security, "store")
        self._auth_channel = channel(auth_address, security, "auth")
        self._store = store_pb2_grpc.StoreServiceStub(self._store_channel)
        self._locks = queue_pb2_grpc.MaildropLockServiceStub(self._store_channel)
        self._password = PasswordChecker(
            auth_pb2_grpc.AuthServiceStub(self._auth_channel), "pop3", deadline
        )
        self._deadline = deadline
        self._page_size = page_size

    async def authenticate(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        return await self._password.check(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def open_maildrop(self, user: str) -> Maildrop:
        try:
            info = await self._store.GetMailbox(
                store_pb2.GetMailboxRequest(user=user, mailbox=INBOX), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                # No INBOX yet (nothing ever delivered): an empty maildrop, not an error.
                return Maildrop(uidvalidity=0, messages=())
            raise _unavailable("GetMailbox", e) from e
        messages: list[MessageInfo] = []
        after = 0
        while True:
            req = store_pb2.ListMessagesRequest(
                user=user, mailbox=INBOX, after_uid=after, limit=self._page_size
            )
            try:
                page = await self._store.ListMessages(req, timeout=self._deadline)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    break
                raise _unavailable("ListMessages", e) from e
            for m in page.messages:
                messages.append(MessageInfo(uid=m.uid, size=m.size, flags=frozenset(m.flags)))
            if not page.more or not page.messages:
                break
            after = page.messages[-1].uid
        return Maildrop(uidvalidity=info.uidvalidity, messages=tuple(messages))

    async def fetch(self, user: str, uid: int, size_hint: int) -> AsyncGenerator[bytes, None]:
        req = store_pb2.GetMessageContentRequest(user=user, mailbox=INBOX, uid=uid)
        call = self._store.GetMessageContent(
            req, timeout=self._deadline + size_hint / _MIN_CLIENT_BYTES_PER_SECOND
        )
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MessageGone(uid) from e
            raise _unavailable("GetMessageContent", e) from e
        finally:
            # TOP stops reading early: end the stream rather than let the store push the rest.
            call.cancel()

    async def _store_flags(
        self,
        user: str,
        uids: Sequence[int],
        mode: store_pb2.FlagsMode.ValueType,
        flags: Sequence[str],
    ) -> None:
        req = store_pb2.StoreFlagsRequest(
            user=user, mailbox=INBOX, uids=list(uids), mode=mode, flags=list(flags)
        )
        try:
            await self._store.StoreFlags(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("StoreFlags", e) from e

    async def add_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        await self._store_flags(user, uids, store_pb2.FLAGS_MODE_ADD, flags)

    async def remove_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        await self._store_flags(user, uids, store_pb2.FLAGS_MODE_REMOVE, flags)

    async def expunge(self, user: str, uids: Sequence[int]) -> list[int]:
        req = store_pb2.ExpungeRequest(user=user, mailbox=INBOX, uids=list(uids))
        try:
            resp = await self._store.Expunge(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("Expunge", e) from e
        return list(resp.expunged_uids)

    async def acquire_lock(self, user: str, session_id: str, lease_seconds: int) -> LockResult:
        req = queue_pb2.MaildropLockRequest(
            user=user, owner=session_id, lease_seconds=lease_seconds
        )
        try:
            resp = await self._locks.Acquire(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("MaildropLock.Acquire", e) from e
        return LockResult(resp.granted, resp.holder)

    async def renew_lock(self, user: str, session_id: str, lease_seconds: int) -> bool:
        req = queue_pb2.MaildropLockRequest(
            user=user, owner=session_id, lease_seconds=lease_seconds
        )
        try:
            resp = await self._locks.Renew(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("MaildropLock.Renew", e) from e
        return bool(resp.granted)

    async def release_lock(self, user: str, session_id: str) -> None:
        req = queue_pb2.MaildropLockRequest(user=user, owner=session_id)
        try:
            await self._locks.Release(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("MaildropLock.Release", e) from e

    async def ready(self) -> bool:
        return await is_serving(
            self._store_channel, "postmesh.api.store.v1.StoreService"
        ) and await is_serving(self._auth_channel, "postmesh.api.auth.v1.AuthService")

    async def close(self) -> None:
        await self._store_channel.close()
        await self._auth_channel.close()
