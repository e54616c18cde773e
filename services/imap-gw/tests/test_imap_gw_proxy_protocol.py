"""POSTMESH_PROXY_PROTOCOL=true over the wire: the client the PROXY header names is the one the
session serves (the loopback rule for plaintext login, auth's remote_ip), on 143 and 993."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

from postmesh.common.proxy_protocol import V2_SIGNATURE

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

MakeEnv = Callable[..., Awaitable["Env"]]

V1_HEADER = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 143\r\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"

# The test clients connect from loopback: trusted as the load balancer.
LOOPBACK = "127.0.0.0/8, ::1"


def v2_tcp4(src: str, sport: int) -> bytes:
    block = (
        socket.inet_aton(src) + socket.inet_aton("198.51.100.1") + struct.pack("!HH", sport, 993)
    )
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(block)) + block


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ProxiedIMAP4(imaplib.IMAP4):
    """imaplib cannot send the header itself: send it on the fresh socket, then (for the
    implicit-TLS port) start TLS, then let imaplib read the greeting as usual."""

    def __init__(self, port: int, header: bytes, tls: ssl.SSLContext | None = None) -> None:
        self._header = header
        self._tls = tls
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        sock.sendall(self._header)
        return self._tls.wrap_socket(sock) if self._tls is not None else sock


async def test_proxied_client_is_not_loopback(make_env: MakeEnv) -> None:
    # The TCP peer is 127.0.0.1 (the "balancer"); the client 192.0.2.10 must use TLS to log in.
    env = await make_env(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[tuple[str, ...], str, tuple[str, ...]]:
        with ProxiedIMAP4(env.port, V1_HEADER) as imap:
            before = imap.capabilities
            try:
                imap.login(env.user, env.password)
                refused = "logged in"
            except imaplib.IMAP4.error as e:
                refused = str(e)
            imap.starttls(client_tls())
            after = imap.capabilities
            imap.login(env.user, env.password)
            imap.logout()
            return before, refused, after

    before, refused, after = await asyncio.to_thread(run)
    assert "LOGINDISABLED" in before
    assert "AUTH=PLAIN" not in before
    assert "PRIVACYREQUIRED" in refused
    assert "LOGINDISABLED" not in after
    assert "AUTH=PLAIN" in after
    assert [(user, ip) for user, ip, _ in env.auth.calls] == [(env.user, "192.0.2.10")]


async def test_header_before_implicit_tls(make_env: MakeEnv) -> None:
    env = await make_env(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> str:
        with ProxiedIMAP4(env.tls_port, v2_tcp4("192.0.2.10", 50000), client_tls()) as imap:
            typ, _ = imap.login(env.user, env.password)
            imap.logout()
            return str(typ)

    assert await asyncio.to_thread(run) == "OK"
    assert [(user, ip) for user, ip, _ in env.auth.calls] == [(env.user, "192.0.2.10")]


async def test_local_health_check_keeps_the_socket_address(make_env: MakeEnv) -> None:
    env = await make_env(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[str, ...]:
        with ProxiedIMAP4(env.port, V2_LOCAL) as imap:
            caps = imap.capabilities
            imap.logout()
            return tuple(caps)

    # A balancer's own connection from loopback: loopback rules apply (no LOGINDISABLED).
    assert "LOGINDISABLED" not in await asyncio.to_thread(run)


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


@pytest.mark.parametrize(
    "send",
    [b"", b"a1 CAPABILITY\r\n", b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 70000\r\n"],
)
async def test_no_valid_header_closed_without_greeting(make_env: MakeEnv, send: bytes) -> None:
    env = await make_env(
        proxy_protocol=True,
        proxy_protocol_timeout_seconds=0.3,
        proxy_trusted_networks=LOOPBACK,
    )
    assert await _server_says(env.port, send) == b""
    assert await _server_says(env.tls_port, send) == b""


async def test_disabled_is_unchanged(env: Env) -> None:
    # Without the setting there is no header to wait for: the greeting comes at once.
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"* OK")
    writer.close()


@pytest.mark.parametrize("trusted", ["", "192.0.2.0/24, 2001:db8::/32"])
async def test_header_from_an_untrusted_peer_closed(make_env: MakeEnv, trusted: str) -> None:
    # POSTMESH_PROXY_TRUSTED_NETWORKS without this peer (or empty): even a valid header is not
    # believed; the connection is closed before a greeting and counted.
    before = _refused_untrusted()
    env = await make_env(proxy_protocol=True, proxy_trusted_networks=trusted)
    for p in (env.port, env.tls_port):
        assert await _server_says(p, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 143\r\n") == b""
    assert _refused_untrusted() == before + len((env.port, env.tls_port))


def _refused_untrusted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "postmesh_proxy_connections_refused"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == "untrusted"
    )
