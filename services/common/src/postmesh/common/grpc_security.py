"""Mutual TLS on every internal gRPC hop, and who may call what (ADR 10).

Each service has its own certificate from one private CA. The identity of a service is the DNS
name ``<service>.postmesh.internal`` in its certificate's subjectAltName: a server proves it to
its client (the client checks that name, not the address it dialled, so a Service name, a pod
IP or 127.0.0.1 all work), and a client proves it to the server, which then looks the caller up
in :data:`POLICY`. Anything that reaches the port without a certificate from the CA does not get
past the handshake; a service calling a method it has no business with gets PERMISSION_DENIED.

The plaintext mode (POSTMESH_GRPC_PLAINTEXT=true) turns both off and says so at start.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter

from postmesh.common import grpc_local
from postmesh.common.config import ServiceSettings
from postmesh.common.grpc_renewal import GrpcCertificates, certificates
from postmesh.common.grpc_renewal import server_credentials as renewing_server_credentials
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

IDENTITY_SUFFIX = ".postmesh.internal"

DENIED = Counter(
    "postmesh_grpc_calls_denied_total",
    "Internal gRPC calls refused because the calling service may not call the method.",
    ["method", "caller"],
)


def identity_name(service: str) -> str:
    """The subjectAltName DNS name that identifies ``service`` ("store", "imap-gw", ...)."""
    return f"{service}{IDENTITY_SUFFIX}"


class GrpcTlsNotConfigured(ValueError):
    """Neither the certificate files nor the explicit plaintext mode are set."""


@dataclass(frozen=True)
class GrpcSecurity:
    """PEM material for mTLS; all None is the plaintext mode. ``source``: the files it was read
    from, watched for renewals (grpc_renewal.py); without it the material is fixed."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    source: GrpcCertificates | None = field(default=None, compare=False, repr=False)

    @property
    def plaintext(self) -> bool:
        return self.cert is None

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> GrpcSecurity:
        source = certificates(cert, key, ca)
        return cls(*source.material, source=source)

    @classmethod
    def from_settings(cls, s: ServiceSettings) -> GrpcSecurity:
        if s.grpc_plaintext:
            log.warning(
                "internal gRPC in PLAINTEXT: no encryption and no caller authentication; "
                "anything that reaches the store or auth port can read every mailbox",
                extra=kv(setting="POSTMESH_GRPC_PLAINTEXT"),
            )
            return cls()
        files = (s.grpc_tls_cert_file, s.grpc_tls_key_file, s.grpc_tls_ca_file)
        if any(f is None for f in files):
            if _only_local_sockets(s):
                return cls()  # nothing to encrypt: every hop is a Unix socket (ADR 0073)
            raise GrpcTlsNotConfigured(
                "internal gRPC needs POSTMESH_GRPC_TLS_CERT_FILE, POSTMESH_GRPC_TLS_KEY_FILE and "
                "POSTMESH_GRPC_TLS_CA_FILE (or POSTMESH_GRPC_PLAINTEXT=true to run without TLS)"
            )
        cert, key, ca = (s.data_path(f) for f in files if f is not None)
        try:
            return cls.from_files(cert, key, ca)
        except OSError as e:
            raise GrpcTlsNotConfigured(f"cannot read a gRPC TLS file: {e}") from e

    def server_credentials(self) -> grpc.ServerCredentials:
        assert self.cert is not None and self.key is not None
        if self.source is not None:
            return renewing_server_credentials(self.source)
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


# ---- authorization


Callers = frozenset[str]
ANY_SERVICE: Callers = frozenset({"*"})
EDGES: Callers = frozenset({"smtp-edge", "imap-gw", "pop3-gw"})


@dataclass(frozen=True)
class ServicePolicy:
    """Who may call a gRPC service: ``default`` for every method not in ``methods``."""

    default: Callers
    methods: dict[str, Callers]

    def callers(self, method: str) -> Callers:
        return self.methods.get(method, self.default)


# Least privilege per hop, from what each service actually calls. A method not named gets the
# service's default; a service not named is refused to everyone.
POLICY: dict[str, ServicePolicy] = {
    "postmesh.api.store.v1.StoreService": ServicePolicy(
        default=frozenset({"imap-gw", "pop3-gw", "delivery", "auth"}),
        methods={
            # Only delivery files inbound mail; only IMAP (and delivery's copies) appends.
            "Deliver": frozenset({"delivery"}),
            "Append": frozenset({"imap-gw", "delivery"}),
            "AppendSmall": frozenset({"imap-gw", "delivery"}),
            # Message bodies travel smtp-edge -> blob -> delivery.
            "PutBlob": frozenset({"smtp-edge", "delivery"}),
            "GetBlob": frozenset({"delivery"}),
            "SetQuota": frozenset({"auth"}),
        },
    ),
    "postmesh.api.store.v1.DeliveryQueueService": ServicePolicy(frozenset({"delivery"}), {}),
    "postmesh.api.store.v1.MaildropLockService": ServicePolicy(frozenset({"pop3-gw"}), {}),
    "postmesh.api.auth.v1.AuthService": ServicePolicy(
        default=EDGES | {"delivery"},
        methods={
            # Password checks come from the protocol edges only.
            "Authenticate": EDGES,
            "ResolveRecipient": frozenset({"smtp-edge", "delivery"}),
            # Private signing keys: the signer only.
            "GetDkimKeys": frozenset({"delivery"}),
        },
    ),
    "grpc.health.v1.Health": ServicePolicy(ANY_SERVICE, {}),
}


def allowed_callers(full_method: str) -> Callers:
    """Callers of ``/package.Service/Method``; empty when the service is not in POLICY."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    policy = POLICY.get(service)
    return policy.callers(method) if policy is not None else frozenset()


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The calling service, from its verified client certificate's subjectAltName."""
    for name in context.auth_context().get("x509_subject_alternative_name", ()):
        text = name.decode() if isinstance(name, bytes) else str(name)
        if text.endswith(IDENTITY_SUFFIX):
            return text[: -len(IDENTITY_SUFFIX)]
    return None


def guarded(handler: Any, method: str, allowed: Callers) -> Any:
    """``handler`` refusing the call unless the verified caller is one of ``allowed``
    (PERMISSION_DENIED); wrapped once per method at registration (postmesh.common.grpc)."""

    async def check(context: grpc.aio.ServicerContext) -> None:
        caller = peer_identity(context)
        if caller is not None and (caller in allowed or allowed >= ANY_SERVICE):
            return
        DENIED.labels(method, caller or "unknown").inc()
        log.warning("gRPC call denied", extra=kv(method=method, caller=caller or "unknown"))
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"{caller or 'this client'} may not call {method}"
        )

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.stream_unary is not None:
        su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
    if handler.unary_stream is not None:
        us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            await check(context)
            async for item in _responses(us(request, context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    ss = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        async for item in _responses(ss(requests, context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


async def _responses(result: Any) -> AsyncIterator[Any]:
    # A streaming servicer is an async generator, or a coroutine that writes with context.write.
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


def _only_local_sockets(s: ServiceSettings) -> bool:
    """Whether every gRPC address this service serves or calls is a Unix socket."""
    names = ("store_address", "auth_address", "store_listen", "auth_listen")
    addresses = [a for n in names if isinstance(a := getattr(s, n, None), str)]
    return all(grpc_local.is_local_socket(a) for a in addresses)
