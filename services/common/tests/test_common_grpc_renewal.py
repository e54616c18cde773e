"""Renewed internal mTLS certificates are taken without a restart (ADR 49), on a real grpc.aio
server and client: after the files of both change to a new CA's certificates, the server's new
handshakes present and trust only the new ones, and the client's channel reconnects with its
renewed certificate; a half-written renewal is not taken."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postmesh.common.dev_pki import ServiceCert, ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel, is_serving
from postmesh.common.grpc_renewal import RenewingChannel
from postmesh.common.grpc_security import GrpcSecurity


def install(cert: ServiceCert, directory: Path) -> tuple[Path, Path, Path]:
    """Copy a service's files into ``directory`` as a Secret volume update would: each file
    replaced by a new one (a new inode), never written in place."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for src, name in ((cert.cert, "tls.crt"), (cert.key, "tls.key"), (cert.ca, "ca.crt")):
        tmp = directory / f".{name}.new"
        shutil.copyfile(src, tmp)
        os.replace(tmp, directory / name)
        out.append(directory / name)
    return out[0], out[1], out[2]


def fixed(cert: ServiceCert) -> GrpcSecurity:
    """Material read once, never renewed: a client that did not restart."""
    return GrpcSecurity(cert.cert.read_bytes(), cert.key.read_bytes(), cert.ca.read_bytes())


@pytest.fixture
def pkis(tmp_path: Path) -> tuple[dict[str, ServiceCert], dict[str, ServiceCert]]:
    # Two CAs: the renewal below is a CA rotation, the hardest case (nothing old is trusted).
    return (
        ensure_dev_pki(tmp_path / "ca-a", ["store", "imap-gw"]),
        ensure_dev_pki(tmp_path / "ca-b", ["store", "imap-gw"]),
    )


@pytest.fixture
async def live(
    tmp_path: Path, pkis: tuple[dict[str, ServiceCert], dict[str, ServiceCert]]
) -> AsyncIterator[tuple[GrpcSecurity, GrpcSecurity, int]]:
    a, _ = pkis
    server_sec = GrpcSecurity.from_files(*install(a["store"], tmp_path / "store"))
    client_sec = GrpcSecurity.from_files(*install(a["imap-gw"], tmp_path / "imap-gw"))
    srv = GrpcServer("127.0.0.1:0", server_sec)
    await srv.start([])
    yield server_sec, client_sec, srv.port
    await srv.stop(0)


async def test_server_and_client_take_renewed_certificates(
    tmp_path: Path,
    pkis: tuple[dict[str, ServiceCert], dict[str, ServiceCert]],
    live: tuple[GrpcSecurity, GrpcSecurity, int],
) -> None:
    a, b = pkis
    server_sec, client_sec, port = live
    target = f"127.0.0.1:{port}"
    client = channel(target, client_sec, "store")
    assert isinstance(client, RenewingChannel)
    assert await is_serving(client)
    first = client.current()

    install(b["store"], tmp_path / "store")
    install(b["imap-gw"], tmp_path / "imap-gw")
    assert server_sec.source is not None and client_sec.source is not None
    assert server_sec.source.reload_if_changed()
    assert client_sec.source.reload_if_changed()
    assert not server_sec.source.reload_if_changed()  # taken once

    # A new connection with only the old CA's material is refused now ...
    old_only = channel(target, fixed(a["imap-gw"]), "store")
    assert not await is_serving(old_only, timeout=2.0)
    await old_only.close()
    # ... one with only the new CA's material is served ...
    new_only = channel(target, fixed(b["imap-gw"]), "store")
    assert await is_serving(new_only)
    await new_only.close()
    # ... and the renewing client moved to a new channel with its renewed certificate, which
    # the server (trusting only the new CA for new handshakes) accepts.
    assert await is_serving(client)
    assert client.current() is not first
    await client.close()


async def test_a_half_written_renewal_is_not_taken(
    tmp_path: Path,
    pkis: tuple[dict[str, ServiceCert], dict[str, ServiceCert]],
    live: tuple[GrpcSecurity, GrpcSecurity, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, b = pkis
    server_sec, client_sec, port = live
    assert server_sec.source is not None
    before = server_sec.source.material
    # The new certificate renamed into place before its key: they do not match.
    tmp = tmp_path / "store" / ".tls.crt.new"
    shutil.copyfile(b["store"].cert, tmp)
    os.replace(tmp, tmp_path / "store" / "tls.crt")
    with caplog.at_level(logging.WARNING, logger="postmesh.common.grpc_renewal"):
        assert not server_sec.source.reload_if_changed()
    assert server_sec.source.material == before
    assert any("not taken" in r.getMessage() for r in caplog.records)
    client = channel(f"127.0.0.1:{port}", client_sec, "store")
    assert await is_serving(client)  # still the previous, whole, material
    # Its key arrives: taken at the next check.
    install(b["store"], tmp_path / "store")
    assert server_sec.source.reload_if_changed()
    await client.close()
