"""TLS contexts, and a self-signed certificate for development made on first run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import Gauge

from postmesh.common.config import ServiceSettings
from postmesh.common.logging import get_logger
from postmesh.common.tasks import cancel_and_wait

log = get_logger(__name__)

CERTIFICATE_EXPIRY = Gauge(
    "postmesh_tls_certificate_expiry_timestamp_seconds",
    'notAfter of the certificate this process serves, as a Unix time; certificate="edge" is '
    'the mail listeners\' (SMTP/IMAP/POP3), "grpc" the internal mTLS one. The edge certificate '
    "and the gRPC one are re-read when their files change (POSTMESH_TLS_RELOAD_SECONDS).",
    ["certificate"],
)


def record_certificate_expiry(certificate: str, pem: bytes) -> datetime.datetime:
    """Publish the notAfter of the leaf (first) certificate of a PEM chain, and return it."""
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    CERTIFICATE_EXPIRY.labels(certificate).set(not_after.timestamp())
    return not_after


def ensure_dev_certificate(
    directory: Path, hostname: str = "localhost", alt_names: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Return (cert, key) in ``directory``, creating a self-signed pair if absent, valid for
    ``hostname``, ``alt_names`` and the loopback addresses.

    Several services start at once under ``make run``; the files are written to temporary names
    and renamed, so a reader never sees half a file, and whichever process renames last wins with
    an equally valid pair.
    """
    cert_path, key_path = directory / "tls-cert.pem", directory / "tls-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    *(x509.DNSName(n) for n in alt_names),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    suffix = f".{os.getpid()}.tmp"
    key_tmp, cert_tmp = (
        key_path.with_name(key_path.name + suffix),
        cert_path.with_name(cert_path.name + suffix),
    )
    key_tmp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_tmp.chmod(0o600)
    cert_tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Key first, then cert: "cert exists" implies its key is in place (both renames are atomic).
    # Two racing writers could pair one's key with the other's cert; only one process writes in
    # practice (make run creates it before starting services), so this is acceptable for dev.
    key_tmp.replace(key_path)
    cert_tmp.replace(cert_path)
    return cert_path, key_path


def _fresh_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The listener's context; it serves the newest pair its files held (CertificateFiles)."""
    ctx = _fresh_server_context(cert, key)
    record_certificate_expiry("edge", cert.read_bytes())
    _watched.append(CertificateFiles(ctx, cert, key))
    return ctx


def signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced: a Kubernetes Secret volume swaps a symlink
    (``..data``) to a new directory, cert-manager and certbot rename new files into place."""
    try:
        st = path.stat()  # follows symlinks: the file the name points to now
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class CertificateFiles:
    """A listener's context and the files it was loaded from. ``reload_if_changed`` loads a
    renewed pair into a new context, and the listener's ``sni_callback`` (which OpenSSL calls
    on every ClientHello, with or without SNI) hands each later handshake the newest one, on
    implicit TLS and STARTTLS alike, without a restart; sessions already encrypted keep theirs.

    Why not ``load_cert_chain`` on the live context: it sets the certificate, then the key, and
    a handshake between the two finds a certificate without its key and fails."""

    listener: ssl.SSLContext
    cert: Path
    key: Path
    seen: tuple[object, object] = field(init=False)
    current: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.seen = (signature(self.cert), signature(self.key))
        self.current = self.listener
        self.listener.sni_callback = self._serve_current

    def _serve_current(
        self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        current = self.current  # one read: a reload swaps the reference, never mutates it
        if current is not self.listener:
            conn.context = current

    def reload_if_changed(self) -> bool:
        now = (signature(self.cert), signature(self.key))
        if now == self.seen or None in now:
            return False
        try:
            # A half-written pair or a key that does not match the certificate (cert renamed
            # into place before its key) is refused, and tried again at the next check.
            renewed = _fresh_server_context(self.cert, self.key)
            not_after = record_certificate_expiry("edge", self.cert.read_bytes())
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "renewed TLS certificate not loaded; still serving the previous one",
                extra={"fields": {"cert": str(self.cert), "error": str(exc)}},
            )
            return False
        self.current = renewed
        self.seen = now
        log.info(
            "TLS certificate reloaded",
            extra={"fields": {"cert": str(self.cert), "not_after": not_after.isoformat()}},
        )
        return True


class Reloadable(Protocol):
    def reload_if_changed(self) -> bool: ...


# The edge certificates' files (CertificateFiles) and the gRPC ones (grpc_renewal.py).
_watched: list[Reloadable] = []


def watch(files: Reloadable) -> None:
    """Have the reload loop check ``files`` too."""
    _watched.append(files)


async def reload_certificates(interval: float) -> None:
    """Check the certificates' files every ``interval`` seconds, for ever."""
    while True:
        await asyncio.sleep(interval)
        for files in _watched:
            # Off the loop: stat and PEM parsing are file I/O.
            await asyncio.to_thread(files.reload_if_changed)


@contextlib.asynccontextmanager
async def certificate_reloading(interval: float) -> AsyncIterator[None]:
    """Run ``reload_certificates`` for the duration (nothing when ``interval`` is 0)."""
    task = asyncio.create_task(reload_certificates(interval)) if interval > 0 else None
    try:
        yield
    finally:
        await cancel_and_wait(task)


def settings_server_context(settings: ServiceSettings) -> ssl.SSLContext:
    """The server TLS context a service's settings describe (dev certificate when none is set)."""
    if settings.tls_cert_file and settings.tls_key_file:
        return server_context(settings.tls_cert_file, settings.tls_key_file)
    cert, key = ensure_dev_certificate(settings.data_dir, settings.hostname)
    return server_context(cert, key)
