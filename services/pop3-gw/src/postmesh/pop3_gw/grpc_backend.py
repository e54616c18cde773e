""":class:`~postmesh.pop3_gw.backend.MailBackend` on the AuthService and StoreService gRPC APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Sequence
from contextlib import aclosing
from typing import TypeVar

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.common.backend import BackendUnavailable, SaslAuthClient
from postmesh.common.grpc import channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger
from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.scram import ScramParams, ScramVerdict
from postmesh.common.store_client import MailboxNotFound, MessageNotFound, StoreClient
from postmesh.common.store_client.types import FlagsMode, MessagePage
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

# A read-ahead batch is read as fast as the store sends it (its memory is reserved up front).
_MIN_STORE_BYTES_PER_SECOND = 1024 * 1024

T = TypeVar("T")


class StoreMaildrop:
    """The store half of the backend, on the typed store client: its answers as POP3 sees
    them (no INBOX is an empty maildrop, an expunged message :class:`MessageGone`); every
    failure is temporary (-ERR [SYS/TEMP])."""

    def __init__(self, store: StoreClient, deadline: float, page_size: int) -> None:
        self._store = store
        self._deadline = deadline
        self._page_size = page_size

    async def lock_and_open(
        self, user: str, session_id: str, lease_seconds: int
    ) -> tuple[LockResult, Maildrop | None]:
        opened = await self._store.open_maildrop(
            user, session_id, lease_seconds, INBOX, self._page_size
        )
        if opened is None:
            # A store from before OpenMaildrop: two round trips, the listing after the lock.
            locked = await self.acquire_lock(user, session_id, lease_seconds)
            return locked, await self.open_maildrop(user) if locked.granted else None
        if not opened.lock.granted:
            return opened.lock, None
        if opened.page is None or opened.uidvalidity is None:
            # No INBOX yet (nothing ever delivered): an empty maildrop, not an error.
            return opened.lock, Maildrop(uidvalidity=0, messages=())
        messages: list[MessageInfo] = []
        page: MessagePage | None = opened.page
        while page is not None:
            messages.extend(
                MessageInfo(uid=m.uid, size=m.size, flags=frozenset(m.flags)) for m in page.messages
            )
            if not page.more or not page.messages:
                break
            page = await self._page(user, page.messages[-1].uid)
        return opened.lock, Maildrop(uidvalidity=opened.uidvalidity, messages=tuple(messages))

    async def open_maildrop(self, user: str) -> Maildrop:
        # The mailbox (for UIDVALIDITY) and the first page together: one round trip, not two.
        first = asyncio.create_task(self._page(user, 0))
        try:
            info = await self._store.get_mailbox(user, INBOX)
        except BaseException as e:
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await first
            if isinstance(e, MailboxNotFound):
                # No INBOX yet (nothing ever delivered): an empty maildrop, not an error.
                return Maildrop(uidvalidity=0, messages=())
            raise
        messages: list[MessageInfo] = []
        page = await first
        while page is not None:
            for m in page.messages:
                messages.append(MessageInfo(uid=m.uid, size=m.size, flags=frozenset(m.flags)))
            if not page.more or not page.messages:
                break
            page = await self._page(user, page.messages[-1].uid)
        return Maildrop(uidvalidity=info.uidvalidity, messages=tuple(messages))

    async def _page(self, user: str, after: int) -> MessagePage | None:
        try:
            return await self._store.list_messages(user, INBOX, after, self._page_size)
        except MailboxNotFound:
            return None

    async def fetch(self, user: str, uid: int, size_hint: int) -> AsyncGenerator[bytes, None]:
        timeout = self._deadline + size_hint / _MIN_CLIENT_BYTES_PER_SECOND
        # aclosing: TOP stops reading early, and the store's stream must end with it.
        async with aclosing(self._store.stream_content(user, INBOX, uid, timeout=timeout)) as s:
            try:
                async for chunk in s:
                    yield chunk
            except MessageNotFound as e:
                raise MessageGone(uid) from e

    async def fetch_many(
        self, user: str, uids: Sequence[int], total_size: int
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        timeout = self._deadline + total_size / _MIN_STORE_BYTES_PER_SECOND
        async with aclosing(self._store.read_contents(user, INBOX, uids, timeout=timeout)) as s:
            async for item in s:
                yield item

    async def add_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        await self._inbox_write(self._store.store_flags(user, INBOX, uids, FlagsMode.ADD, flags))

    async def remove_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        await self._inbox_write(self._store.store_flags(user, INBOX, uids, FlagsMode.REMOVE, flags))

    async def expunge(self, user: str, uids: Sequence[int]) -> list[int]:
        return list(await self._inbox_write(self._store.expunge_uids(user, INBOX, uids)))

    @staticmethod
    async def _inbox_write(call: Awaitable[T]) -> T:
        """The INBOX gone under an open maildrop cannot be answered in POP3 other than as a
        temporary failure (-ERR [SYS/TEMP]); the next session sees an empty maildrop."""
        try:
            return await call
        except MailboxNotFound as e:
            raise BackendUnavailable(f"INBOX not found: {e}") from e

    async def acquire_lock(self, user: str, session_id: str, lease_seconds: int) -> LockResult:
        return await self._store.acquire_lock(user, session_id, lease_seconds)

    async def renew_lock(self, user: str, session_id: str, lease_seconds: int) -> bool:
        return await self._store.renew_lock(user, session_id, lease_seconds)

    async def release_lock(self, user: str, session_id: str) -> None:
        await self._store.release_lock(user, session_id)


class GrpcBackend(StoreMaildrop):
    """:class:`~postmesh.pop3_gw.backend.MailBackend` on StoreService and AuthService."""

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
        super().__init__(StoreClient(self._store_channel, deadline), deadline, page_size)
        self._auth = SaslAuthClient(
            auth_pb2_grpc.AuthServiceStub(self._auth_channel), "pop3", deadline
        )

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        return await self._auth.check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        return await self._auth.scram_params(username, remote_ip=remote_ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        return await self._auth.verify_scram(username, auth_message, proof, remote_ip=remote_ip)

    async def ready(self) -> bool:
        return await is_serving(
            self._store_channel, "postmesh.api.store.v1.StoreService"
        ) and await is_serving(self._auth_channel, "postmesh.api.auth.v1.AuthService")

    async def close(self) -> None:
        await self._store_channel.close()
        await self._auth_channel.close()
