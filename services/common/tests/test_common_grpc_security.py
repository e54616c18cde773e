"""Internal gRPC over mutual TLS with caller authorization (ADR 10), on a real grpc.aio server:
who may call what, and what happens to callers without the right certificate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from prometheus_client import REGISTRY

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.config import ServiceSettings
from postmesh.common.dev_pki import ServiceCert, ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.grpc_security import (
    GrpcSecurity,
    GrpcTlsNotConfigured,
    allowed_callers,
)

SERVICES = ["store", "auth", "smtp-edge", "imap-gw", "pop3-gw", "delivery"]


class Auth(auth_pb2_grpc.AuthServiceServicer):
    async def Authenticate(self, request: Any, context: Any) -> Any:
        return auth_pb2.AuthenticateResponse(ok=True, user=request.username)

    async def ResolveRecipient(self, request: Any, context: Any) -> Any:
        return auth_pb2.ResolveRecipientResponse()


class Store(store_pb2_grpc.StoreServiceServicer):
    async def GetMessageContent(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for part in (b"a", b"b"):
            yield store_pb2.ContentChunk(data=part)

    async def PutBlob(self, requests: Any, context: Any) -> Any:
        size = 0
        async for chunk in requests:
            size += len(chunk.data)
        return store_pb2.PutBlobResponse(blob_id=f"b{size}")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, ServiceCert]:
    return ensure_dev_pki(tmp_path / "pki", SERVICES)


@pytest.fixture
async def server(pki: dict[str, ServiceCert]) -> AsyncIterator[int]:
    # One process serving both APIs, with the store's certificate: enough to check the policy.
    srv = GrpcServer("127.0.0.1:0", pki["store"].security())
    srv.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, Auth())
    srv.add(store_pb2_grpc.add_StoreServiceServicer_to_server, Store())
    await srv.start([])
    yield srv.port
    await srv.stop(0)


def auth_as(port: int, security: GrpcSecurity) -> auth_pb2_grpc.AuthServiceStub:
    # The server presents the store's certificate here, so the client expects "store".
    return auth_pb2_grpc.AuthServiceStub(channel(f"127.0.0.1:{port}", security, "store"))


def store_as(port: int, security: GrpcSecurity) -> store_pb2_grpc.StoreServiceStub:
    return store_pb2_grpc.StoreServiceStub(channel(f"127.0.0.1:{port}", security, "store"))


def denied(method: str, caller: str) -> float:
    labels = {"method": method, "caller": caller}
    return REGISTRY.get_sample_value("postmesh_grpc_calls_denied_total", labels) or 0.0


async def test_edges_authenticate_others_are_denied(
    server: int, pki: dict[str, ServiceCert]
) -> None:
    req = auth_pb2.AuthenticateRequest(username="u", password="p")
    for edge in ("smtp-edge", "imap-gw", "pop3-gw"):
        assert (await auth_as(server, pki[edge].security()).Authenticate(req, timeout=10)).ok
    method = "/postmesh.api.auth.v1.AuthService/Authenticate"
    before = denied(method, "delivery")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await auth_as(server, pki["delivery"].security()).Authenticate(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "delivery may not call" in (e.value.details() or "")
    assert denied(method, "delivery") == before + 1
    # Each allowed call is timed, with its status.
    timed = {"method": method, "code": "OK"}
    assert (
        REGISTRY.get_sample_value("postmesh_grpc_server_handling_seconds_count", timed) or 0
    ) >= 3
    # ...while delivery may resolve recipients.
    stub = auth_as(server, pki["delivery"].security())
    await stub.ResolveRecipient(auth_pb2.ResolveRecipientRequest(address="a@b"), timeout=10)


async def test_streaming_methods_are_guarded(server: int, pki: dict[str, ServiceCert]) -> None:
    req = store_pb2.GetMessageContentRequest(user="u", mailbox="INBOX", uid=1)
    chunks = [
        c.data
        async for c in store_as(server, pki["imap-gw"].security()).GetMessageContent(
            req, timeout=10
        )
    ]
    assert chunks == [b"a", b"b"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in store_as(server, pki["smtp-edge"].security()).GetMessageContent(
            req, timeout=10
        ):
            pass
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def upload() -> AsyncIterator[store_pb2.ContentChunk]:
        yield store_pb2.ContentChunk(data=b"xyz")

    put = await store_as(server, pki["smtp-edge"].security()).PutBlob(upload(), timeout=10)
    assert put.blob_id == "b3"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await store_as(server, pki["imap-gw"].security()).PutBlob(upload(), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_callers_without_a_certificate_of_the_ca_get_nothing(
    server: int, pki: dict[str, ServiceCert], tmp_path: Path
) -> None:
    req = auth_pb2.AuthenticateRequest(username="u", password="p")
    # Plaintext against the TLS port, a client certificate of another CA, no client certificate.
    other = ensure_dev_pki(tmp_path / "other-ca", ["imap-gw"])["imap-gw"].security()
    for security in (GrpcSecurity(), other):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await auth_as(server, security).Authenticate(req, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch = grpc.aio.secure_channel(
        f"127.0.0.1:{server}",
        grpc.ssl_channel_credentials(root_certificates=pki["imap-gw"].ca.read_bytes()),
        options=[("grpc.ssl_target_name_override", "store.postmesh.internal")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await auth_pb2_grpc.AuthServiceStub(ch).Authenticate(req, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    await ch.close()


async def test_client_checks_the_server_identity(server: int, pki: dict[str, ServiceCert]) -> None:
    # The server has the store's certificate: a client dialling "auth" refuses it.
    stub = auth_pb2_grpc.AuthServiceStub(
        channel(f"127.0.0.1:{server}", pki["imap-gw"].security(), "auth")
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Authenticate(auth_pb2.AuthenticateRequest(username="u"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_settings_need_files_or_explicit_plaintext(
    pki: dict[str, ServiceCert], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(GrpcTlsNotConfigured, match="POSTMESH_GRPC_PLAINTEXT"):
        GrpcSecurity.from_settings(ServiceSettings())
    c = pki["store"]
    s = ServiceSettings(grpc_tls_cert_file=c.cert, grpc_tls_key_file=c.key, grpc_tls_ca_file=c.ca)
    assert not GrpcSecurity.from_settings(s).plaintext
    # Its notAfter is published for the certificate-expiry alert.
    not_after = x509.load_pem_x509_certificate(c.cert.read_bytes()).not_valid_after_utc
    assert (
        REGISTRY.get_sample_value(
            "postmesh_tls_certificate_expiry_timestamp_seconds", {"certificate": "grpc"}
        )
        == not_after.timestamp()
    )
    missing = ServiceSettings(
        grpc_tls_cert_file=c.cert, grpc_tls_key_file=c.key, grpc_tls_ca_file=Path("/nonexistent")
    )
    with pytest.raises(GrpcTlsNotConfigured, match="cannot read"):
        GrpcSecurity.from_settings(missing)
    with caplog.at_level("WARNING"):
        assert GrpcSecurity.from_settings(ServiceSettings(grpc_plaintext=True)).plaintext
    assert "PLAINTEXT" in caplog.text


def test_policy_refuses_unknown_services() -> None:
    assert allowed_callers("/postmesh.api.store.v1.StoreService/Deliver") == {"delivery"}
    assert "pop3-gw" in allowed_callers("/postmesh.api.store.v1.MaildropLockService/Acquire")
    assert allowed_callers("/some.other.Service/Method") == frozenset()


async def test_a_service_registered_without_named_handlers_is_refused(
    pki: dict[str, ServiceCert],
) -> None:
    # Handlers are guarded as they are registered by name; a registration that only adds a
    # generic handler could not be guarded, so it fails instead of serving unguarded methods.
    def generic_only(servicer: Any, server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(servicer)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("postmesh.api.x.v1.X", {"M": handler}),)
        )

    srv = GrpcServer("127.0.0.1:0", pki["store"].security())
    with pytest.raises(TypeError, match="no named method handlers"):
        srv.add(generic_only, lambda request, context: None)
