"""Internal gRPC on a Unix socket (ADR 0073): served and called without TLS, the socket closed to
other users, a live server never displaced, a dead one's socket reused."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.common import grpc_local
from postmesh.common.config import ServiceSettings
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.devstack import StackPorts, grpc_targets, service_env
from postmesh.common.grpc import GrpcServer, channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity, GrpcTlsNotConfigured


class Auth(auth_pb2_grpc.AuthServiceServicer):
    async def Authenticate(self, request: Any, context: Any) -> Any:
        return auth_pb2.AuthenticateResponse(ok=True, user=request.username)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_local_socket_serves_every_caller_of_its_user_without_tls(
    tmp_path: Path,
) -> None:
    # The server holds a certificate (as in `make run`), yet the socket carries no TLS and
    # no per-method policy: pop3-gw may call Authenticate, and so may a caller without any
    # certificate, as any process of this user could with the keys in the data directory.
    pki = ensure_dev_pki(tmp_path / "pki", ["auth", "pop3-gw"])
    address = f"unix:{tmp_path}/grpc/auth.sock"
    srv = GrpcServer(address, pki["auth"].security())
    srv.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, Auth())
    await srv.start(["postmesh.api.auth.v1.AuthService"])
    try:
        path = tmp_path / "grpc" / "auth.sock"
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert mode(path) == 0o600 and mode(path.parent) == 0o700
        for security in (pki["pop3-gw"].security(), GrpcSecurity()):
            ch = channel(address, security, "auth")
            assert await is_serving(ch)
            reply = await auth_pb2_grpc.AuthServiceStub(ch).Authenticate(
                auth_pb2.AuthenticateRequest(username="u@example.test"), timeout=5
            )
            assert reply.ok and reply.user == "u@example.test"
            await ch.close()
        # A second server on the same address is refused; the first keeps its socket.
        second = GrpcServer(address, GrpcSecurity())
        with pytest.raises(OSError, match="another server is listening"):
            await second.start([])
        assert stat.S_ISSOCK(path.stat().st_mode)
    finally:
        await srv.stop(0)


def test_a_dead_servers_socket_is_reused_and_anything_else_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "store.sock"
    path.parent.mkdir(mode=0o755)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening, then gone: what a SIGKILL leaves
    dead.close()
    assert grpc_local.claim(f"unix:{path}") == path
    # Gone; and the directory, which was there already, keeps its mode.
    assert not path.exists() and mode(path.parent) == 0o755
    path.write_text("not a socket")
    with pytest.raises(OSError, match="is not a socket"):
        grpc_local.claim(f"unix:{path}")
    assert path.read_text() == "not a socket"


def test_only_local_hops_need_no_certificate(tmp_path: Path) -> None:
    local = {
        "store_address": f"unix:{tmp_path}/store.sock",
        "auth_address": f"unix:{tmp_path}/auth.sock",
    }
    assert GrpcSecurity.from_settings(ServiceSettings(**local)).plaintext
    # One TCP hop still needs mutual TLS or the explicit plaintext mode.
    with pytest.raises(GrpcTlsNotConfigured):
        GrpcSecurity.from_settings(ServiceSettings(**{**local, "auth_address": "127.0.0.1:1"}))


def test_the_local_stack_puts_store_and_auth_on_sockets_that_fit(tmp_path: Path) -> None:
    ports = StackPorts(store_grpc=1061, auth_grpc=1062)
    env = service_env(ports, tmp_path, "imap-gw")
    assert env["POSTMESH_STORE_ADDRESS"] == env["POSTMESH_STORE_LISTEN"]
    assert env["POSTMESH_STORE_ADDRESS"] == f"unix:{tmp_path}/grpc/store.sock"
    assert env["POSTMESH_AUTH_ADDRESS"] == f"unix:{tmp_path}/grpc/auth.sock"
    # As between pods: loopback TCP (with the throwaway CA's certificates).
    tcp = service_env(ports, tmp_path, "imap-gw", local_grpc=False)
    assert (tcp["POSTMESH_STORE_ADDRESS"], tcp["POSTMESH_AUTH_ADDRESS"]) == (
        "127.0.0.1:1061",
        "127.0.0.1:1062",
    )
    assert tcp["POSTMESH_GRPC_TLS_CERT_FILE"]
    # A data directory too deep for a socket address (108 bytes) falls back to TCP.
    deep = tmp_path / ("d" * 100)
    assert grpc_targets(ports, deep, local=True) == {
        "store": "127.0.0.1:1061",
        "auth": "127.0.0.1:1062",
    }
