"""POSTMESH_PROXY_PROTOCOL=true over the wire: the client the PROXY header names is the one the
session serves (the loopback rule for USER/PASS, auth's remote_ip), on 110 and 995."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY

from postmesh.common.proxy_protocol import V2_SIGNATURE

if TYPE_CHECKING:
    from conftest import Backend, Env

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
V1_HEADER = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 110\r\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"

# The test clients connect from loopback: trusted as the load balancer.
LOOPBACK = "127.0.0.0/8, ::1"


def v2_tcp6(src: str, sport: int) -> bytes:
    block = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + struct.pack("!HH", sport, 995)
    )
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(block)) + block


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ProxiedPOP3(poplib.POP3):
    """poplib cannot send the header itself: send it on the fresh socket, then (for the
    implicit-TLS port) start TLS, then let poplib read the greeting as usual."""

    def __init__(self, port: int, header: bytes, tls: ssl.SSLContext | None = None) -> None:
        self._header = header
        self._tls = tls
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = super()._create_socket(timeout)
        sock.sendall(self._header)
        return self._tls.wrap_socket(sock) if self._tls is not None else sock


def authenticated_from(backend: Backend) -> list[tuple[str, str]]:
    return [(args[0], args[1]) for name, args in backend.calls if name == "authenticate"]


async def test_proxied_client_is_not_loopback(
    start_server: Callable[..., Any], backend: Backend
) -> None:
    # The TCP peer is 127.0.0.1 (the "balancer"); the client 192.0.2.10 must use TLS first.
    service = await start_server(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[dict[str, list[str]], str, dict[str, list[str]]]:
        pop = ProxiedPOP3(service.port, V1_HEADER)
        try:
            before = pop.capa()
            try:
                refused = pop.user(USER).decode()
            except poplib.error_proto as e:
                refused = str(e)
            pop.stls(client_tls())
            after = pop.capa()
            pop.user(USER)
            pop.pass_(PASSWORD)
            pop.quit()
            return before, refused, after
        finally:
            pop.close()

    before, refused, after = await asyncio.to_thread(run)
    assert "USER" not in before
    assert before["SASL"] == ["SCRAM-SHA-256"]  # no password-sending mechanism
    assert "STLS" in before
    assert refused.startswith("b'-ERR [AUTH]")
    assert "USER" in after
    assert authenticated_from(backend) == [(USER, "192.0.2.10")]


async def test_header_before_implicit_tls(
    start_server: Callable[..., Any], backend: Backend
) -> None:
    service = await start_server(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> bytes:
        pop = ProxiedPOP3(service.tls_port, v2_tcp6("2001:db8::10", 50000), client_tls())
        try:
            pop.user(USER)
            reply = pop.pass_(PASSWORD)
            pop.quit()
            return reply
        finally:
            pop.close()

    assert (await asyncio.to_thread(run)).startswith(b"+OK")
    assert authenticated_from(backend) == [(USER, "2001:db8::10")]


async def test_local_health_check_keeps_the_socket_address(
    start_server: Callable[..., Any],
) -> None:
    service = await start_server(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> dict[str, list[str]]:
        pop = ProxiedPOP3(service.port, V2_LOCAL)
        try:
            caps = pop.capa()
            pop.quit()
            return caps
        finally:
            pop.close()

    # The balancer's own connection from loopback: loopback rules apply.
    assert "USER" in await asyncio.to_thread(run)


async def _server_says(port: int, send: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(send)
    got = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), 10):
            got += chunk
    except ConnectionResetError:
        pass
    writer.close()
    return got


@pytest.mark.parametrize("send", [b"", b"CAPA\r\n", b"PROXY TCP6 192.0.2.10 ::1 40000 110\r\n"])
async def test_no_valid_header_closed_without_greeting(
    start_server: Callable[..., Any], send: bytes
) -> None:
    service = await start_server(
        proxy_protocol=True,
        proxy_protocol_timeout_seconds=0.3,
        proxy_trusted_networks=LOOPBACK,
    )
    assert await _server_says(service.port, send) == b""
    assert await _server_says(service.tls_port, send) == b""


async def test_disabled_is_unchanged(env: Env) -> None:
    # Without the setting there is no header to wait for: the greeting comes at once.
    def run() -> dict[str, list[str]]:
        pop = env.pop()
        try:
            return pop.capa()
        finally:
            pop.quit()

    assert "USER" in await asyncio.to_thread(run)


@pytest.mark.parametrize("trusted", ["", "192.0.2.0/24, 2001:db8::/32"])
async def test_header_from_an_untrusted_peer_closed(
    start_server: Callable[..., Any], trusted: str
) -> None:
    # POSTMESH_PROXY_TRUSTED_NETWORKS without this peer (or empty): even a valid header is not
    # believed; the connection is closed before a greeting and counted.
    before = _refused_untrusted()
    env = await start_server(proxy_protocol=True, proxy_trusted_networks=trusted)
    for p in (env.port, env.tls_port):
        assert await _server_says(p, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 110\r\n") == b""
    assert _refused_untrusted() == before + len((env.port, env.tls_port))


def _refused_untrusted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "postmesh_proxy_connections_refused"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == "untrusted"
    )
