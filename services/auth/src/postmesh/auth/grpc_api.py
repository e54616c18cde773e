"""gRPC AuthService: what the protocol edges and delivery ask of accounts."""

from __future__ import annotations

import grpc

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts, RecipientKind
from postmesh.auth.addresses import InvalidAddress
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

_KINDS = {
    RecipientKind.LOCAL_USER: auth_pb2.RECIPIENT_KIND_LOCAL_USER,
    RecipientKind.UNKNOWN_LOCAL: auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL,
    RecipientKind.REMOTE: auth_pb2.RECIPIENT_KIND_REMOTE,
}


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AuthenticateResponse:
        user = await self.accounts.authenticate(
            request.username, request.password, request.protocol
        )
        log.info(
            "authentication",
            extra=kv(
                user=request.username,
                protocol=request.protocol,
                remote_ip=request.remote_ip,
                mechanism=request.mechanism,
                result="ok" if user else "fail",
            ),
        )
        if user is None:
            return auth_pb2.AuthenticateResponse(ok=False, reason="invalid credentials")
        return auth_pb2.AuthenticateResponse(ok=True, user=user.address)

    async def ResolveRecipient(
        self, request: auth_pb2.ResolveRecipientRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ResolveRecipientResponse:
        try:
            kind, users = await self.accounts.resolve_recipient(request.address)
        except InvalidAddress as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return auth_pb2.ResolveRecipientResponse(kind=_KINDS[kind], users=users)
