"""What the protocol edges share when they call the internal services: one error for "the
backend could not answer" (each protocol turns it into its temporary failure reply) and the
password check on AuthService."""

from __future__ import annotations

import grpc

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.common.logging import get_logger, kv

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


class PasswordChecker:
    """AuthService.Authenticate for one protocol."""

    def __init__(self, stub: auth_pb2_grpc.AuthServiceStub, protocol: str, deadline: float) -> None:
        self._stub = stub
        self._protocol = protocol
        self._deadline = deadline

    async def check(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        """The canonical user name on success, None for wrong credentials."""
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
        return str(resp.user or username) if resp.ok else None
