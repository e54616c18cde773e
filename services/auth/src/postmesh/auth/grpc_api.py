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
        result = await self.accounts.login(
            request.username, request.password, request.protocol, request.remote_ip
        )
        user = result.user
        log.info(
            "authentication",
            extra=kv(
                user=request.username,
                protocol=request.protocol,
                remote_ip=request.remote_ip,
                mechanism=request.mechanism,
                result="ok" if user else ("locked" if result.retry_after else "fail"),
            ),
        )
        if result.retry_after:
            return auth_pb2.AuthenticateResponse(
                ok=False, reason="temporarily locked out", retry_after_seconds=result.retry_after
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

    async def GetScramCredentials(
        self, request: auth_pb2.GetScramCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetScramCredentialsResponse:
        params, retry = await self.accounts.scram_params(request.username, request.remote_ip)
        if params is None:
            return auth_pb2.GetScramCredentialsResponse(retry_after_seconds=retry)
        return auth_pb2.GetScramCredentialsResponse(salt=params.salt, iterations=params.iterations)

    async def VerifyScramProof(
        self, request: auth_pb2.VerifyScramProofRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyScramProofResponse:
        result = await self.accounts.verify_scram(
            request.username,
            request.auth_message,
            request.client_proof,
            request.protocol,
            request.remote_ip,
        )
        log.info(
            "authentication",
            extra=kv(
                user=request.username,
                protocol=request.protocol,
                remote_ip=request.remote_ip,
                mechanism="SCRAM-SHA-256",
                result="ok" if result.user else ("locked" if result.retry_after else "fail"),
            ),
        )
        if result.user is None:
            return auth_pb2.VerifyScramProofResponse(retry_after_seconds=result.retry_after)
        return auth_pb2.VerifyScramProofResponse(
            ok=True, user=result.user.address, server_signature=result.server_signature
        )
