"""POSTMESH_PROXY_PROTOCOL=true over the wire: behind a load balancer the client is the one the
PROXY header names (Received:, bus record, auth, the loopback rule), on all three listeners."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import struct
from typing import TYPE_CHECKING

import pytest
from prometheus_client import REGISTRY

from postmesh.common.proxy_protocol import V2_SIGNATURE

if TYPE_CHECKING:
    from conftest import Edge, EdgeFactory

V1_HEADER = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n"
MESSAGE = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"

# The test clients connect from loopback: trusted as the load balancer.
LOOPBACK = "127.0.0.0/8, ::1"


def v2_tcp6(src: str, sport: int) -> bytes:
    block = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        + struct.pack("!HH", sport, 465)
    )
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def proxied_smtp(
    port: int, header: bytes, tls: ssl.SSLContext | None = None
) -> tuple[smtplib.SMTP, tuple[int, bytes]]:
    """smtplib cannot send the header: connect, send it, (start implicit TLS,) then hand the
    socket to smtplib as its connect() would. Returns the client and the greeting."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(header)
    if tls is not None:
        sock = tls.wrap_socket(sock)
    client = smtplib.SMTP(local_hostname="client.test", timeout=10)
    client.sock = sock
    client._host = "127.0.0.1"  # type: ignore[attr-defined]  # used by starttls()
    return client, client.getreply()


async def test_mx_received_header_names_the_proxied_client(make_edge: EdgeFactory) -> None:
    edge = await make_edge(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[int, bytes]:
        client, greeting = proxied_smtp(edge.mx, V1_HEADER)
        with client:
            assert greeting[0] == 220
            client.ehlo("client.test")
            client.mail("carol@example.net")
            client.rcpt("alice@example.org")
            return client.data(MESSAGE)

    code, _ = await asyncio.to_thread(run)
    assert code == 250
    [msg] = await edge.messages(1)
    assert msg.client.remote_ip == "192.0.2.10"
    assert msg.inline_content.startswith(b"Received: from client.test (unknown [192.0.2.10])\r\n")


async def test_submission_from_proxied_client_needs_starttls(
    make_edge: EdgeFactory, client_tls: ssl.SSLContext
) -> None:
    # The TCP peer is 127.0.0.1 (the "balancer"), but the client 192.0.2.10 is not loopback:
    # no AUTH before STARTTLS, as for any remote client.
    edge = await make_edge(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[str, tuple[int, bytes], str, tuple[int, bytes]]:
        client, _ = proxied_smtp(edge.submission, V1_HEADER)
        with client:
            client.ehlo("client.test")
            before = client.esmtp_features.get("auth", "")
            refused = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdvbmRlcmxhbmQ=")
            client.starttls(context=client_tls)
            client.ehlo("client.test")
            after = client.esmtp_features.get("auth", "")
            client.user, client.password = "alice@example.org", "wonderland"
            return before, refused, after, client.auth("PLAIN", client.auth_plain)

    before, refused, after, auth = await asyncio.to_thread(run)
    assert before == ""
    assert refused[0] == 538
    assert after.split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert auth[0] == 235
    assert edge.backend.auth_calls == [("alice@example.org", "PLAIN", "192.0.2.10")]


async def test_submissions_header_before_implicit_tls(
    make_edge: EdgeFactory, client_tls: ssl.SSLContext
) -> None:
    edge = await make_edge(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        client, greeting = proxied_smtp(
            edge.submissions, v2_tcp6("2001:db8::10", 50000), client_tls
        )
        with client:
            client.ehlo("client.test")
            client.user, client.password = "bob@example.org", "builder"
            return greeting, client.auth("PLAIN", client.auth_plain)

    greeting, auth = await asyncio.to_thread(run)
    assert greeting[0] == 220
    assert auth[0] == 235
    assert edge.backend.auth_calls == [("bob@example.org", "PLAIN", "2001:db8::10")]


async def test_local_health_check_keeps_the_socket_address(make_edge: EdgeFactory) -> None:
    # v2 LOCAL: the balancer's own connection; the socket peer (loopback here) is the client.
    edge = await make_edge(proxy_protocol=True, proxy_trusted_networks=LOOPBACK)

    def run() -> str:
        client, _ = proxied_smtp(edge.submission, V2_LOCAL)
        with client:
            client.ehlo("client.test")
            return str(client.esmtp_features.get("auth", ""))

    assert (await asyncio.to_thread(run)).split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]


def _server_says(port: int, send: bytes) -> bytes:
    """Everything the server sends before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(send)
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
        return got


async def test_no_header_closed_without_greeting(make_edge: EdgeFactory) -> None:
    edge = await make_edge(
        proxy_protocol=True,
        proxy_protocol_timeout_seconds=0.3,
        proxy_trusted_networks=LOOPBACK,
    )
    for port in (edge.mx, edge.submission, edge.submissions):
        # A client that speaks first, one that waits for a greeting (timeout), a bad header.
        assert await asyncio.to_thread(_server_says, port, b"EHLO client.test\r\n") == b""
        assert await asyncio.to_thread(_server_says, port, b"") == b""
        bad = b"PROXY TCP4 192.0.2.10 127.0.0.1 040000 25\r\n"
        assert await asyncio.to_thread(_server_says, port, bad) == b""
    assert all(s.is_serving() for s in edge.service.servers.values())


async def test_disabled_is_unchanged(edge: Edge) -> None:
    # Without the setting a PROXY line is just a bad command after the greeting.
    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            return s.noop(), s.docmd("PROXY", "TCP4 192.0.2.10 127.0.0.1 40000 25")

    noop, proxy = await asyncio.to_thread(run)
    assert noop[0] == 250
    assert proxy[0] == 500


@pytest.mark.parametrize("trusted", ["", "192.0.2.0/24, 2001:db8::/32"])
async def test_header_from_an_untrusted_peer_closed(make_edge: EdgeFactory, trusted: str) -> None:
    # POSTMESH_PROXY_TRUSTED_NETWORKS without this peer (or empty): even a valid header is not
    # believed; the connection is closed before a greeting and counted.
    before = _refused_untrusted()
    env = await make_edge(proxy_protocol=True, proxy_trusted_networks=trusted)
    for p in (env.mx, env.submission, env.submissions):
        assert (
            await asyncio.to_thread(
                _server_says, p, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n"
            )
            == b""
        )
    assert _refused_untrusted() == before + len((env.mx, env.submission, env.submissions))


def _refused_untrusted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "postmesh_proxy_connections_refused"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == "untrusted"
    )
