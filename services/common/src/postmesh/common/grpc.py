"""gRPC plumbing: an aio server with the standard health service, and channels with deadlines,
retries of UNAVAILABLE (a store replica restarting must not fail a client call) and client-side
round robin over every address the target resolves to (ADR 37)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Histogram

from postmesh.common import grpc_local
from postmesh.common.grpc_calls import OpenStreams, calls_handler
from postmesh.common.grpc_renewal import RenewingChannel
from postmesh.common.grpc_security import (
    GrpcSecurity,
    allowed_callers,
    guarded,
    identity_name,
)
from postmesh.common.logging import get_logger

log = get_logger(__name__)

# Messages are streamed in chunks well below this; the headroom is for large metadata pages.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 256 * 1024

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]

# Servers close each connection after a few minutes, with a grace far above the default call
# deadline (POSTMESH_GRPC_DEADLINE_SECONDS): clients then reconnect and re-resolve their target,
# so replicas added behind a headless Service get traffic without a client restart (gRPC's DNS
# resolver otherwise asks again only when a connection fails).
_SERVER_OPTIONS = [
    *_OPTIONS,
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 60_000),
]

# The clients' service config (gRPC's doc/service_config.md): round_robin keeps a connection to
# every address of the target and spreads calls over the ready ones; pick_first, gRPC's default,
# would send everything to the first address (a headless Service's name has one per pod).
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)

RPC_SECONDS = Histogram(
    "postmesh_grpc_server_handling_seconds",
    "Time to handle one gRPC call, by method and status code.",
    ["method", "code"],
)


def _timed(handler: Any, method: str) -> Any:
    """``handler`` with its unary calls observed in RPC_SECONDS."""
    if handler.unary_unary is None:
        return handler
    inner = handler.unary_unary
    ok = RPC_SECONDS.labels(method, "OK")  # looked up once, not per call

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            return await inner(request, context)
        except BaseException:
            status = context.code()
            code = status.name if status is not None else "UNKNOWN"
            raise
        finally:
            child = ok if code == "OK" else RPC_SECONDS.labels(method, code)
            child.observe(time.perf_counter() - start)

    return grpc.unary_unary_rpc_method_handler(
        timed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _Registrar:
    """Stands in for the server in the generated ``add_*_to_server`` functions and wraps each
    method's handler once, at registration: caller authorization (with mutual TLS) and the
    call-time metric. A server interceptor did the same per call, building new handlers for
    every call (about 60 µs of server CPU per call; ADR 0039)."""

    def __init__(self, server: grpc.aio.Server, guard: bool, streams: OpenStreams) -> None:
        self._server = server
        self._guard = guard
        self.streams = streams
        self.generic_only: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        # Generated code registers its methods twice, generically and by name; the by-name
        # call below has the handlers to wrap. Code that only calls this one is refused after
        # registration (a method must never be served unguarded).
        self.generic_only.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            h = _timed(handler, method)
            if self._guard:
                h = guarded(h, method, allowed_callers(method))
            wrapped[name] = h
        calls = handlers.get("Calls")
        if calls is not None and calls.stream_stream is not None:
            # A service's Calls stream carries its unary calls, each to the handler wrapped
            # above: guarded and measured as that call (ADR 0051).
            unary = {n: h for n, h in wrapped.items() if h.unary_unary is not None}
            h = calls_handler(unary, calls, self.streams)
            if self._guard:
                h = guarded(h, f"/{service}/Calls", allowed_callers(f"/{service}/Calls"))
            wrapped["Calls"] = h
        self.generic_only.clear()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)


class GrpcServer:
    """A grpc.aio server on ``address`` with health checking for ``service_names``: mutual TLS
    and per-method caller authorization unless ``security`` is the plaintext mode or the
    address is a local socket (``unix:/path``, file permissions instead: ADR 0073)."""

    def __init__(self, address: str, security: GrpcSecurity) -> None:
        self.address = address
        self.security = security
        self.local = grpc_local.is_local_socket(address)
        self.secure = not (security.plaintext or self.local)
        self.server = grpc.aio.server(options=_SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        self.call_streams = OpenStreams()
        self.add(health_pb2_grpc.add_HealthServicer_to_server, self.health)
        self.port = 0

    def add(self, register: Callable[[Any, Any], None], servicer: Any) -> None:
        """``register`` is a generated ``add_<Service>Servicer_to_server``."""
        registrar = _Registrar(self.server, self.secure, self.call_streams)
        register(servicer, registrar)
        if registrar.generic_only:
            raise TypeError(f"{register.__name__} registers no named method handlers")

    async def start(self, service_names: Iterable[str]) -> None:
        if self.local:
            path = grpc_local.claim(self.address)
            self.port = self.server.add_insecure_port(self.address)
            grpc_local.restrict(path)
        elif self.security.plaintext:
            self.port = self.server.add_insecure_port(self.address)
        else:
            creds = self.security.server_credentials()
            self.port = self.server.add_secure_port(self.address, creds)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self.address}")
        await self.server.start()
        for name in [*service_names, ""]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server listening", extra={"fields": {"address": self.address}})

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        self.call_streams.end_all()
        await self.server.stop(grace)


def channel(target: str, security: GrpcSecurity, server: str) -> grpc.aio.Channel:
    """A client channel to the ``server`` service ("store", "auth") at ``target``, with retries
    on UNAVAILABLE and round robin over the target's addresses (``host:port``, resolved by DNS
    to every A/AAAA record, e.g. a headless Service; or a list,
    ``ipv4:127.0.0.1:1,127.0.0.1:2``; or a local socket, ``unix:/path``, without TLS: ADR
    0073); pass ``timeout=`` on every call. With TLS every replica must present the
    certificate of ``server``'s identity, whatever address it has."""
    options = [
        *_OPTIONS,
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        # Only ours: a service config published in DNS TXT records is never applied.
        ("grpc.service_config_disable_resolution", 1),
    ]
    if security.plaintext or grpc_local.is_local_socket(target):
        return grpc.aio.insecure_channel(target, options=options)
    # Checked against every replica's certificate (and sent as :authority): replicas share
    # their service's identity, not their address (ADR 10).
    options.append(("grpc.ssl_target_name_override", identity_name(server)))
    if security.source is not None:
        # Moves to the renewed certificate when its files change (ADR 49).
        return RenewingChannel(
            security.source, lambda creds: grpc.aio.secure_channel(target, creds, options=options)
        )
    return grpc.aio.secure_channel(target, security.channel_credentials(), options=options)


async def is_serving(ch: grpc.aio.Channel, service: str = "", timeout: float = 2.0) -> bool:
    """Readiness probe helper: asks the peer's standard health service."""
    stub = health_pb2_grpc.HealthStub(ch)
    try:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError:
        return False
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
