"""The edge certificate is reloaded in place when its files are renewed (cert-manager,
certbot, a Kubernetes Secret update), without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import threading
from pathlib import Path

from cryptography import x509

from postmesh.common.tls import CertificateFiles, ensure_dev_certificate, server_context


async def _served_names(ctx: ssl.SSLContext, handshakes: int = 1) -> list[str]:
    """The CN of the certificate each of ``handshakes`` real TLS handshakes on loopback gets
    from a server on ``ctx``, one after the other."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    names = []
    try:
        for _ in range(handshakes):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            names.append(x509.load_der_x509_certificate(der).subject.rfc4514_string())
    finally:
        server.close()
        await server.wait_closed()
    return names


async def _served_name(ctx: ssl.SSLContext) -> str:
    return (await _served_names(ctx))[0]


def _pair(tmp: Path, name: str) -> tuple[Path, Path]:
    return ensure_dev_certificate(tmp / name, name)


def _install(src: tuple[Path, Path], dst: tuple[Path, Path]) -> None:
    """As a renewal tool does: new files renamed into place (new inodes)."""
    for s, d in zip(src, dst, strict=True):
        shutil.copyfile(s, d.with_name(d.name + ".new"))
        os.replace(d.with_name(d.name + ".new"), d)


def test_a_renewed_pair_is_served_by_the_same_context(tmp_path: Path) -> None:
    live = _pair(tmp_path, "old.example")
    ctx = server_context(*live)
    files = CertificateFiles(ctx, *live)
    assert asyncio.run(_served_name(ctx)) == "CN=old.example"
    assert files.reload_if_changed() is False  # nothing changed

    _install(_pair(tmp_path, "new.example"), live)
    assert files.reload_if_changed() is True
    assert asyncio.run(_served_name(ctx)) == "CN=new.example"
    assert files.reload_if_changed() is False


def test_a_mismatched_pair_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    live = _pair(tmp_path, "old.example")
    ctx = server_context(*live)
    files = CertificateFiles(ctx, *live)
    other = _pair(tmp_path, "new.example")
    # Only the certificate renamed into place so far: its key is not there yet.
    _install((other[0], live[1]), live)
    assert files.reload_if_changed() is False
    assert asyncio.run(_served_name(ctx)) == "CN=old.example"
    # Then the key arrives: the next check loads the pair.
    _install(other, live)
    assert files.reload_if_changed() is True
    assert asyncio.run(_served_name(ctx)) == "CN=new.example"


def test_a_missing_file_keeps_the_old_certificate(tmp_path: Path) -> None:
    live = _pair(tmp_path, "old.example")
    ctx = server_context(*live)
    files = CertificateFiles(ctx, *live)
    live[0].unlink()
    assert files.reload_if_changed() is False
    assert asyncio.run(_served_name(ctx)) == "CN=old.example"


def test_handshakes_during_reloads_all_succeed(tmp_path: Path) -> None:
    """A reload never leaves the listener half-loaded (new certificate, no key yet): every
    handshake made while pairs are being swapped in gets one whole pair or the other."""
    pairs = [_pair(tmp_path, "a.example"), _pair(tmp_path, "b.example")]
    live = (tmp_path / "tls.crt", tmp_path / "tls.key")
    _install(pairs[0], live)
    ctx = server_context(*live)
    files = CertificateFiles(ctx, *live)
    stop = threading.Event()

    def renew() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            _install(pairs[n % 2], live)
            files.reload_if_changed()

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        names = set(asyncio.run(_served_names(ctx, 150)))
    finally:
        stop.set()
        renewer.join()
    assert names <= {"CN=a.example", "CN=b.example"}
