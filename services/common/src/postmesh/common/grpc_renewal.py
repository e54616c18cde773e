"""Renewed internal mTLS certificates taken into use without a restart (ADR 49).

cert-manager renews a service's gRPC certificate some time before it expires and swaps the
files in the pod's Secret volume; a process that read them once at start would keep presenting
the old certificate until it expired, and then every internal call would fail. So the files are
watched like the edge certificates (``POSTMESH_TLS_RELOAD_SECONDS``, ``tls.py``):
- a server's credentials come from a fetcher that gRPC calls before each new connection's
  handshake (``grpc.dynamic_ssl_server_credentials``), answering the renewed material once;
- a client channel (``RenewingChannel``) opens a new channel with the renewed material at its
  first call after a renewal; calls already running finish on the old channel, which is closed
  ``OLD_CHANNEL_GRACE_SECONDS`` later.
A renewed CA bundle (a CA rotation) is taken the same way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from postmesh.common.logging import get_logger, kv
from postmesh.common.tls import record_certificate_expiry, signature, watch

log = get_logger(__name__)

# Long enough for any call or stream in flight on the old channel to end (the longest is a POP3
# or IMAP content stream, seconds); a call still running then is cancelled and retried.
OLD_CHANNEL_GRACE_SECONDS = 600.0


class GrpcCertificates:
    """The mTLS material read from three files, and a generation that moves on each renewal."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.files = (cert, key, ca)
        self._lock = threading.Lock()
        self.generation = 0
        self.material = self._read()
        self._seen = self._signatures()
        record_certificate_expiry("grpc", self.material[0])

    def _signatures(self) -> tuple[object, ...]:
        return tuple(signature(p) for p in self.files)

    def _read(self) -> tuple[bytes, bytes, bytes]:
        cert, key, ca = (p.read_bytes() for p in self.files)
        return cert, key, ca

    def reload_if_changed(self) -> bool:
        """Called from the reload loop (in a thread): True when a renewed set was taken."""
        now = self._signatures()
        if now == self._seen or None in now:
            return False
        try:
            cert, key, ca = self._read()
            _check_pair(cert, key, ca)
            not_after = record_certificate_expiry("grpc", cert)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # Half-written, or the certificate renamed into place before its key: the next
            # check tries again; the previous material stays in use.
            log.warning(
                "renewed gRPC certificate not taken; still using the previous one",
                extra=kv(cert=str(self.files[0]), error=str(exc)),
            )
            return False
        with self._lock:
            self.material = (cert, key, ca)
            self.generation += 1
        self._seen = now
        log.info(
            "gRPC certificate renewed",
            extra=kv(cert=str(self.files[0]), not_after=not_after.isoformat()),
        )
        return True


def _check_pair(cert: bytes, key: bytes, ca: bytes) -> None:
    """Raises ValueError unless ``key`` belongs to ``cert`` and ``ca`` holds certificates."""
    public = x509.load_pem_x509_certificate(cert).public_key()
    private = serialization.load_pem_private_key(key, password=None)
    raw = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*raw) != public.public_bytes(*raw):
        raise ValueError("the key does not belong to the certificate")
    x509.load_pem_x509_certificates(ca)


_by_files: dict[tuple[Path, Path, Path], GrpcCertificates] = {}


def certificates(cert: Path, key: Path, ca: Path) -> GrpcCertificates:
    """The process's one watcher for these files (registered with the reload loop)."""
    files = (cert, key, ca)
    found = _by_files.get(files)
    if found is None:
        found = _by_files[files] = GrpcCertificates(cert, key, ca)
        watch(found)
    return found


def server_credentials(source: GrpcCertificates) -> grpc.ServerCredentials:
    def configuration(material: tuple[bytes, bytes, bytes]) -> Any:
        cert, key, ca = material
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    served = [source.generation]

    def fetch() -> Any:
        # Before every new connection's handshake (gRPC core's thread): cheap when unchanged.
        if source.generation == served[0]:
            return None
        served[0] = source.generation
        return configuration(source.material)

    return grpc.dynamic_ssl_server_credentials(
        configuration(source.material), fetch, require_client_authentication=True
    )


def channel_credentials(material: tuple[bytes, bytes, bytes]) -> grpc.ChannelCredentials:
    cert, key, ca = material
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


class RenewingChannel(grpc.aio.Channel):  # type: ignore[misc]  # grpc.aio is untyped
    """A client channel that moves to a new one after its certificates were renewed.

    Stubs take multicallables from their channel once; these ask for the current channel on
    every call (one integer comparison when nothing changed)."""

    def __init__(
        self, source: GrpcCertificates, make: Callable[[grpc.ChannelCredentials], Any]
    ) -> None:
        self._source = source
        self._make = make
        self._generation = source.generation
        self._channel: grpc.aio.Channel = make(channel_credentials(source.material))
        self._old: list[grpc.aio.Channel] = []
        self._closing: set[asyncio.Task[None]] = set()

    def current(self) -> grpc.aio.Channel:
        if self._source.generation != self._generation:
            self._generation = self._source.generation
            old, self._channel = (
                self._channel,
                self._make(channel_credentials(self._source.material)),
            )
            self._old.append(old)
            asyncio.get_running_loop().call_later(OLD_CHANNEL_GRACE_SECONDS, self._retire, old)
            log.info("gRPC channel reopened with the renewed certificate")
        return self._channel

    def _retire(self, old: grpc.aio.Channel) -> None:
        if old in self._old:
            self._old.remove(old)
            task = asyncio.ensure_future(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- grpc.aio.Channel ----------------------------------------------------------------------

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Switching(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Switching(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Switching(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Switching(self, "stream_stream", method, args, kwargs)

    async def close(self, grace: float | None = None) -> None:
        for ch in [*self._old, self._channel]:
            await ch.close(grace)
        self._old.clear()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def __aenter__(self) -> RenewingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)


class _Switching:
    """A multicallable of whichever channel is current when it is called."""

    def __init__(
        self,
        owner: RenewingChannel,
        kind: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._owner = owner
        self._kind = kind
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._for: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ch = self._owner.current()
        if ch is not self._for:
            self._callable = getattr(ch, self._kind)(self._method, *self._args, **self._kwargs)
            self._for = ch
        return self._callable(*args, **kwargs)
