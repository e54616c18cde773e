"""Client-side round robin (ADR 37) on real grpc.aio servers with mutual TLS: a channel over two
replicas' addresses spreads calls over both, checks each replica's certificate against the
service's identity, and keeps working when one replica goes away."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.common.dev_pki import ServiceCert, ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel


class CountingAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Authenticate(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return auth_pb2.AuthenticateResponse(ok=True, user=request.username)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, ServiceCert]:
    return ensure_dev_pki(tmp_path / "pki", ["auth", "imap-gw"])


@pytest.fixture
async def replicas(
    pki: dict[str, ServiceCert],
) -> AsyncIterator[list[tuple[GrpcServer, CountingAuth]]]:
    started = []
    for _ in range(2):
        srv, servicer = GrpcServer("127.0.0.1:0", pki["auth"].security()), CountingAuth()
        srv.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer)
        await srv.start([])
        started.append((srv, servicer))
    yield started
    for srv, _ in started:
        await srv.stop(0)


async def test_calls_are_spread_over_every_address_and_survive_a_lost_replica(
    replicas: list[tuple[GrpcServer, CountingAuth]], pki: dict[str, ServiceCert]
) -> None:
    target = "ipv4:" + ",".join(f"127.0.0.1:{srv.port}" for srv, _ in replicas)
    ch = channel(target, pki["imap-gw"].security(), "auth")
    stub = auth_pb2_grpc.AuthServiceStub(ch)
    req = auth_pb2.AuthenticateRequest(username="u", password="p")
    for _ in range(40):
        assert (await stub.Authenticate(req, timeout=10)).ok
    counts = [servicer.calls for _, servicer in replicas]
    assert sum(counts) == 40
    # round_robin: both replicas serve (pick_first would send all 40 to the first address).
    assert min(counts) >= 10, counts

    await replicas[0][0].stop(0)
    for _ in range(20):
        assert (await stub.Authenticate(req, timeout=10)).ok
    assert replicas[1][1].calls == counts[1] + 20
    await ch.close()
