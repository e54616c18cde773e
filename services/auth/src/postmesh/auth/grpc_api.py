"""gRPC AuthService: what the protocol edges and delivery ask of accounts."""

from __future__ import annotations

import grpc

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress, canonical_domain
from postmesh.auth.recipients import RecipientKind
from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth import dkim

log = get_logger(__name__)

_DKIM_ALGORITHMS = {
    dkim.DkimAlgorithm.RSA_SHA256.value: auth_pb2.DKIM_ALGORITHM_RSA_SHA256,
    dkim.DkimAlgorithm.ED25519_SHA256.value: auth_pb2.DKIM_ALGORITHM_ED25519_SHA256,
}

_KINDS = {
    RecipientKind.LOCAL_USER: auth_pb2.RECIPIENT_KIND_LOCAL_USER,
    RecipientKind.UNKNOWN_LOCAL: auth_pb2.RECIPIENT_KIND_UNKNOWN_LOCAL,
    RecipientKind.DISABLED: auth_pb2.RECIPIENT_KIND_DISABLED,
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
            r = await self.accounts.resolve_recipient(request.address)
        except InvalidAddress as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return auth_pb2.ResolveRecipientResponse(
            kind=_KINDS[r.kind], users=r.users, remote_targets=r.remote, catch_all=r.catch_all
        )

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

    async def GetDkimKeys(
        self, request: auth_pb2.GetDkimKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetDkimKeysResponse:
        # Private keys in the answer: never log them (DkimKey's repr leaves them out).
        try:
            domain = canonical_domain(request.domain)
        except InvalidAddress as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if await self.accounts.repo.get_domain(domain) is None:
            return auth_pb2.GetDkimKeysResponse(local_domain=False, domain=domain)
        keys = [
            auth_pb2.DkimSigningKey(
                selector=k.selector,
                algorithm=_DKIM_ALGORITHMS[k.algorithm],
                private_key=k.private_key,
            )
            for k in await self.accounts.dkim.active(domain)
            if k.algorithm in _DKIM_ALGORITHMS
        ]
        return auth_pb2.GetDkimKeysResponse(local_domain=True, domain=domain, keys=keys)
