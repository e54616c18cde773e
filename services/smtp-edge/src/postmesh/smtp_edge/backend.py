"""What the SMTP session needs from the auth and store services, as one small interface.

The real implementation calls the gRPC stubs; unit tests use an in-memory fake."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.backend import BackendUnavailable, SaslAuthClient, SaslAuthClientLike
from postmesh.common.grpc import CHUNK_BYTES

__all__ = ["BackendUnavailable", "EdgeBackend", "GrpcEdgeBackend", "RecipientKind"]


class AddressRefused(Exception):
    """auth found the address malformed (INVALID_ARGUMENT): a permanent answer, not an outage."""


class RecipientKind(enum.Enum):
    LOCAL_USER = "local_user"
    UNKNOWN_LOCAL = "unknown_local"
    DISABLED = "disabled"
    REMOTE = "remote"


class EdgeBackend(SaslAuthClientLike, Protocol):
    """AUTH's password checks and SCRAM-SHA-256 (``SaslAuthClient``), recipients, blobs."""

    async def resolve_recipient(self, address: str) -> RecipientKind: ...

    async def address_owners(self, address: str) -> list[str]:
        """The users a local address delivers to (itself, user+tag, or an alias's users); empty
        for a remote, unknown or disabled address and for one only a catch-all takes (a
        catch-all owns nothing). Who may send as the address (submission sender check)."""

    async def put_blob(self, data: bytes) -> str:
        """Store ``data`` durably and return its blob id (claim check)."""


_KINDS = {
    auth_pb2.RECIPIENT_KIND_LOCAL_USER: RecipientKind.LOCAL_USER,
    auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL: RecipientKind.UNKNOWN_LOCAL,
    auth_pb2.RECIPIENT_KIND_DISABLED: RecipientKind.DISABLED,
    auth_pb2.RECIPIENT_KIND_REMOTE: RecipientKind.REMOTE,
}


class GrpcEdgeBackend(SaslAuthClient):
    def __init__(
        self,
        auth: auth_pb2_grpc.AuthServiceStub,
        store: store_pb2_grpc.StoreServiceStub,
        deadline: float,
    ) -> None:
        super().__init__(auth, "smtp", deadline)
        self.auth = auth
        self.store = store
        self.deadline = deadline

    async def resolve_recipient(self, address: str) -> RecipientKind:
        try:
            resp = await self.auth.ResolveRecipient(
                auth_pb2.ResolveRecipientRequest(address=address), timeout=self.deadline
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise AddressRefused(e.details() or "invalid address") from e
            raise BackendUnavailable(f"auth.ResolveRecipient: {e.code().name}") from e
        kind = _KINDS.get(resp.kind)
        if kind is None:
            raise BackendUnavailable(f"auth.ResolveRecipient: unknown kind {resp.kind}")
        return kind

    async def address_owners(self, address: str) -> list[str]:
        try:
            resp = await self.auth.ResolveRecipient(
                auth_pb2.ResolveRecipientRequest(address=address), timeout=self.deadline
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return []  # a malformed address belongs to no one
            raise BackendUnavailable(f"auth.ResolveRecipient: {e.code().name}") from e
        if resp.kind != auth_pb2.RECIPIENT_KIND_LOCAL_USER or resp.catch_all:
            return []
        return [u.lower() for u in resp.users]

    async def put_blob(self, data: bytes) -> str:
        async def chunks() -> AsyncIterator[store_pb2.ContentChunk]:
            for i in range(0, len(data), CHUNK_BYTES):
                yield store_pb2.ContentChunk(data=data[i : i + CHUNK_BYTES])

        try:
            resp = await self.store.PutBlob(chunks(), timeout=self.deadline)
        except grpc.aio.AioRpcError as e:
            raise BackendUnavailable(f"store.PutBlob: {e.code().name}") from e
        if resp.size != len(data) or not resp.blob_id:
            raise BackendUnavailable(
                f"store.PutBlob stored {resp.size} of {len(data)} bytes, id {resp.blob_id!r}"
            )
        return str(resp.blob_id)
