"""A user's storage quota lives in the store (RFC 9208 QUOTA over IMAP reads it there); the
admin API sets it through store.SetQuota, which only auth may call (grpc_security.POLICY)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc


class QuotaUnavailable(Exception):
    """The store did not answer; the quota is unchanged."""


@dataclass(frozen=True, slots=True)
class Quota:
    storage_used_bytes: int
    storage_limit_bytes: int  # 0: unlimited
    messages_used: int
    message_limit: int  # 0: unlimited


class Quotas(Protocol):
    async def get(self, user: str) -> Quota: ...

    async def set(self, user: str, storage_limit_bytes: int, message_limit: int) -> Quota: ...


def _quota(info: store_pb2.QuotaInfo) -> Quota:
    return Quota(
        info.storage_used_bytes, info.storage_limit_bytes, info.messages_used, info.message_limit
    )


class StoreQuotas:
    def __init__(self, store: store_pb2_grpc.StoreServiceStub, deadline: float) -> None:
        self.store = store
        self.deadline = deadline

    async def _provision(self, user: str) -> None:
        """The store knows a user from their first login or delivery on; a quota may come
        first, so create the mailboxes now (ProvisionUser is idempotent)."""
        await self.store.ProvisionUser(
            store_pb2.ProvisionUserRequest(user=user, without_listing=True),
            timeout=self.deadline,
        )

    async def get(self, user: str) -> Quota:
        try:
            await self._provision(user)
            info = await self.store.GetQuota(
                store_pb2.GetQuotaRequest(user=user), timeout=self.deadline
            )
        except grpc.aio.AioRpcError as e:
            raise QuotaUnavailable(f"store.GetQuota: {e.code().name}") from e
        return _quota(info)

    async def set(self, user: str, storage_limit_bytes: int, message_limit: int) -> Quota:
        try:
            await self._provision(user)
            info = await self.store.SetQuota(
                store_pb2.SetQuotaRequest(
                    user=user,
                    storage_limit_bytes=storage_limit_bytes,
                    message_limit=message_limit,
                ),
                timeout=self.deadline,
            )
        except grpc.aio.AioRpcError as e:
            raise QuotaUnavailable(f"store.SetQuota: {e.code().name}") from e
        return _quota(info)
