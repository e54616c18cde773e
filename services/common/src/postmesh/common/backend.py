"""What the protocol edges share when they call the internal services: one error for "the
backend could not answer" (each protocol turns it into its temporary failure reply) and the
SASL calls on AuthService (password checks, SCRAM-SHA-256), for every edge."""

from __future__ import annotations

from typing import Protocol

import grpc

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.common.logging import get_logger, kv
from postmesh.common.sasl.exchange import AuthVerdict
from postmesh.common.sasl.scram import ScramParams, ScramVerdict

log = get_logger(__name__)


class BackendUnavailable(Exception):
    """An internal call failed for a reason that may pass: SMTP 4xx, IMAP NO [UNAVAILABLE],
    POP3 -ERR [SYS/TEMP]."""


def unavailable(method: str, err: grpc.aio.AioRpcError) -> BackendUnavailable:
    """Log a failed internal call and turn it into :class:`BackendUnavailable`."""
    log.warning(
        "backend call failed", extra=kv(method=method, code=str(err.code()), details=err.details())
    )
    return BackendUnavailable(f"{method}: {err.code().name}")


class SaslAuthClient:
    """AuthService calls behind a SASL exchange (postmesh.common.sasl.exchange): passwords with
    lockout answers, and SCRAM-SHA-256 parameters and proof checks. One per protocol."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceStub, protocol: str, deadline: float) -> None:
        self._stub = stub
        self._protocol = protocol
        self._deadline = deadline

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        req = auth_pb2.AuthenticateRequest(
            username=username,
            password=password,
            protocol=self._protocol,
            remote_ip=remote_ip,
            mechanism=mechanism,
        )
        try:
            resp = await self._stub.Authenticate(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise unavailable("auth.Authenticate", e) from e
        if resp.ok:
            return AuthVerdict(str(resp.user or username))
        return AuthVerdict(None, resp.retry_after_seconds)

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        req = auth_pb2.GetScramCredentialsRequest(
            username=username, protocol=self._protocol, remote_ip=remote_ip
        )
        try:
            resp = await self._stub.GetScramCredentials(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise unavailable("auth.GetScramCredentials", e) from e
        if resp.retry_after_seconds:
            return AuthVerdict(None, resp.retry_after_seconds)
        return ScramParams(resp.salt, resp.iterations)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        req = auth_pb2.VerifyScramProofRequest(
            username=username,
            auth_message=auth_message,
            client_proof=proof,
            protocol=self._protocol,
            remote_ip=remote_ip,
        )
        try:
            resp = await self._stub.VerifyScramProof(req, timeout=self._deadline)
        except grpc.aio.AioRpcError as e:
            raise unavailable("auth.VerifyScramProof", e) from e
        if resp.retry_after_seconds:
            return AuthVerdict(None, resp.retry_after_seconds)
        return ScramVerdict(resp.user if resp.ok else None, resp.server_signature)


class BoundVerifier:
    """A :class:`postmesh.common.sasl.Verifier` for one connection (its client address)."""

    def __init__(self, client: SaslAuthClientLike, remote_ip: str) -> None:
        self._client = client
        self._ip = remote_ip

    async def check_password(self, authcid: str, password: str, mechanism: str) -> AuthVerdict:
        return await self._client.check_password(
            authcid, password, remote_ip=self._ip, mechanism=mechanism
        )

    async def scram_params(self, username: str) -> ScramParams | AuthVerdict:
        return await self._client.scram_params(username, remote_ip=self._ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes
    ) -> ScramVerdict | AuthVerdict:
        return await self._client.verify_scram(username, auth_message, proof, remote_ip=self._ip)


class SaslAuthClientLike(Protocol):
    """What :class:`BoundVerifier` needs: :class:`SaslAuthClient` or a test fake."""

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict: ...

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict: ...

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict: ...
