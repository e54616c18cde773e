"""The backend interfaces on the store and auth gRPC services: the common typed store client
(:mod:`postmesh.common.store_client`, one error mapping for every gateway) plus what is
IMAP's own, the SEARCH criteria in the store's form."""

from __future__ import annotations

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.common.backend import SaslAuthClient
from postmesh.common.store_client import StoreClient
from postmesh.common.store_client.types import SearchResult
from postmesh.imap_gw.parser.search import SearchKey
from postmesh.imap_gw.search_proto import to_proto


class GrpcMailStore(StoreClient):
    """:class:`~postmesh.imap_gw.backend.MailStore` on StoreService."""

    async def search(self, user: str, mailbox: str, criteria: SearchKey) -> SearchResult:
        """SEARCH (RFC 9051 §6.4.4). Raises SearchRejected, MailboxNotFound."""
        return await self.search_proto(user, mailbox, to_proto(criteria))


class GrpcAuthenticator(SaslAuthClient):
    """:class:`~postmesh.imap_gw.backend.Authenticator` on AuthService, for IMAP."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceAsyncStub, deadline: float) -> None:
        super().__init__(stub, "imap", deadline)  # type: ignore[arg-type]
