"""PROXY protocol v1/v2 parsing (HAProxy proxy-protocol.txt) and the proxied listener over real
loopback sockets, implicit TLS included."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postmesh.common.config import ServiceSettings
from postmesh.common.net import in_networks, parse_networks
from postmesh.common.proxy_protocol import (
    V1_MAX_BYTES,
    V2_SIGNATURE,
    Address,
    ProxiedServer,
    ProxyHeader,
    ProxyHeaderError,
    read_header_from_socket,
    read_header_from_stream,
    start_proxied_server,
    stream_protocol_factory,
)
from postmesh.common.tls import settings_server_context

AFTER = b"EHLO client.example\r\n"

LOOPBACK = parse_networks("127.0.0.0/8, ::1")


def v2(command: int, fam: int, block: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(0x1, 0x11, block + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!HH", sport, dport)
    )
    return v2(0x1, 0x21, block)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


async def parse(data: bytes, *, eof: bool = True, timeout: float = 1.0) -> ProxyHeader:
    """Parse from a StreamReader holding ``data`` followed by AFTER; checks AFTER is untouched."""
    reader = asyncio.StreamReader()
    reader.feed_data(data + AFTER)
    if eof:
        reader.feed_eof()
    header = await read_header_from_stream(reader, timeout)
    assert await reader.read() == AFTER
    return header


async def reject(data: bytes, *, eof: bool = True, timeout: float = 1.0) -> str:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    with pytest.raises(ProxyHeaderError) as e:
        await read_header_from_stream(reader, timeout)
    return str(e.value)


# ---- version 1 ----------------------------------------------------------------------------------


async def test_v1_tcp4() -> None:
    h = await parse(b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n")
    assert h == ProxyHeader(1, ("192.0.2.10", 56324), ("198.51.100.1", 25))
    assert h.client(("10.0.0.5", 4000)) == ("192.0.2.10", 56324)


async def test_v1_tcp6_canonicalised() -> None:
    h = await parse(b"PROXY TCP6 2001:DB8:0:0::10 2001:db8::1 65535 0\r\n")
    assert h.source == ("2001:db8::10", 65535)
    assert h.destination == ("2001:db8::1", 0)


async def test_v1_tcp6_longest_line() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(line) == 104
    assert (await parse(line)).source == (full, 65535)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        # §2.1: the receiver ignores whatever follows UNKNOWN; this is the 107-byte worst case.
        b"PROXY UNKNOWN " + b"f" * 39 + b" " + b"f" * 39 + b" 65535 65535\r\n",
    ],
)
async def test_v1_unknown_uses_the_connection(line: bytes) -> None:
    assert len(line) <= V1_MAX_BYTES
    h = await parse(line)
    assert h == ProxyHeader(1, None, None)
    assert h.client(("10.0.0.5", 4000)) == ("10.0.0.5", 4000)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\n",  # LF alone, then EOF
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\r\n",
        b"PROXY TCP4 192.0.2.10\n198.51.100.1 56324 25\r\n",
        b"PROXY  TCP4 192.0.2.10 198.51.100.1 56324 25\r\n",
        b"PROXY TCP4 192.0.2.10  198.51.100.1 56324 25\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25 \r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",
        b"PROXY TCP5 192.0.2.10 198.51.100.1 56324 25\r\n",
        b"PROXY tcp4 192.0.2.10 198.51.100.1 56324 25\r\n",
        b"PROXY TCP4 192.0.2.010 198.51.100.1 56324 25\r\n",  # leading zero (octal?)
        b"PROXY TCP4 192.0.2.256 198.51.100.1 56324 25\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.1 56324 25\r\n",  # family mismatch
        b"PROXY TCP6 192.0.2.10 2001:db8::1 56324 25\r\n",
        b"PROXY TCP6 fe80::1%eth0 2001:db8::1 56324 25\r\n",
        b"PROXY TCP6 2001:db8:::1 2001:db8::1 56324 25\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 0123 25\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 2x\r\n",
        b"PROXY \r\n",
    ],
)
async def test_v1_malformed(line: bytes) -> None:
    await reject(line)


async def test_v1_oversize_line() -> None:
    # No CRLF within 107 bytes: refused without reading on (the rest is never consumed).
    reader = asyncio.StreamReader()
    reader.feed_data(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n")
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        await read_header_from_stream(reader, 1.0)
    assert len(await reader.read(1000)) == 14 + 200 + 2 - V1_MAX_BYTES


async def test_v1_truncated() -> None:
    assert "closed" in await reject(b"PROXY TCP4 192.0.2.10 198.51")


# ---- version 2 ----------------------------------------------------------------------------------


async def test_v2_tcp4() -> None:
    h = await parse(v2_tcp4("192.0.2.10", "198.51.100.1", 40000, 143))
    assert h == ProxyHeader(2, ("192.0.2.10", 40000), ("198.51.100.1", 143))


async def test_v2_tcp6() -> None:
    h = await parse(v2_tcp6("2001:db8::10", "2001:db8::1", 40000, 993))
    assert h == ProxyHeader(2, ("2001:db8::10", 40000), ("2001:db8::1", 993))


async def test_v2_ipv4_mapped_is_ipv4() -> None:
    h = await parse(v2_tcp6("::ffff:127.0.0.1", "::ffff:10.0.0.1", 1, 2))
    assert h.source == ("127.0.0.1", 1)


async def test_v2_tlvs_skipped() -> None:
    tlvs = tlv(0x01, b"imap") + tlv(0x02, b"mail.example") + tlv(0x04, b"\x00" * 28)
    h = await parse(v2_tcp4("192.0.2.10", "198.51.100.1", 40000, 993, tlvs))
    assert h.source == ("192.0.2.10", 40000)


async def test_v2_local_keeps_the_connection() -> None:
    # §2.2: LOCAL (a health check) must be accepted, its address block skipped, not assumed empty.
    block = socket.inet_aton("10.9.9.9") * 2 + struct.pack("!HH", 1, 2)
    for header in (v2(0x0, 0x00, b""), v2(0x0, 0x11, block)):
        h = await parse(header)
        assert h == ProxyHeader(2, None, None, local=True)
        assert h.client(("10.0.0.5", 4000)) == ("10.0.0.5", 4000)


@pytest.mark.parametrize(
    ("fam", "size"),
    [(0x00, 0), (0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)],
)
async def test_v2_unsupported_families_fall_back_to_the_connection(fam: int, size: int) -> None:
    h = await parse(v2(0x1, fam, b"\x01" * size))
    assert h == ProxyHeader(2, None, None)


@pytest.mark.parametrize(
    "data",
    [
        v2_tcp4("192.0.2.10", "198.51.100.1", 1, 2).replace(b"QUIT", b"QUIX"),
        V2_SIGNATURE + b"\x11\x11" + struct.pack("!H", 12) + b"\x00" * 12,  # version 1
        V2_SIGNATURE + b"\x31\x11" + struct.pack("!H", 12) + b"\x00" * 12,  # version 3
        v2(0x2, 0x11, b"\x00" * 12),  # command 2
        v2(0x1, 0x41, b"\x00" * 12),  # family 4
        v2(0x1, 0x13, b"\x00" * 12),  # transport 3
        v2(0x1, 0x11, b"\x00" * 11),  # address block too short for IPv4
        v2(0x1, 0x21, b"\x00" * 12),  # ... and for IPv6
        b"\r\n\r\n\x00\rGARBAGE!",
    ],
)
async def test_v2_malformed(data: bytes) -> None:
    await reject(data)


@pytest.mark.parametrize("cut", [5, 12, 15, 20])
async def test_v2_truncated(cut: int) -> None:
    assert "closed" in await reject(v2_tcp4("192.0.2.10", "198.51.100.1", 1, 2)[:cut])


async def test_v2_announced_length_is_read_in_full() -> None:
    # A TLV area of 60000 bytes is legal; every byte of it is consumed, none after it.
    h = await parse(v2_tcp4("192.0.2.10", "198.51.100.1", 1, 2, tlv(0xE0, b"z" * 59_990)))
    assert h.source == ("192.0.2.10", 1)


# ---- missing header, timeout --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"EHLO client.example\r\n", b"a001 CAPABILITY\r\n", b"\x16\x03\x01"]
)
async def test_no_header(data: bytes) -> None:
    await reject(data)


async def test_closed_before_anything_is_marked_empty() -> None:
    # A TCP health check (connect, close) is told apart from a broken header, for the logs.
    for data, empty in ((b"", True), (b"PRO", False), (b"\r\n\r\n\x00\rQ", False)):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        with pytest.raises(ProxyHeaderError) as e:
            await read_header_from_stream(reader, 1.0)
        assert e.value.empty is empty, data


async def test_timeout() -> None:
    # Half a header, then silence: given up after the timeout.
    msg = await reject(b"PROXY TCP4 192.0.2.10", eof=False, timeout=0.1)
    assert "within 0.1s" in msg


# ---- over real sockets --------------------------------------------------------------------------


async def test_socket_reader_leaves_the_rest_unread() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        b.sendall(b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n" + AFTER)
        h = await read_header_from_socket(a, 1.0)
        assert h.source == ("192.0.2.10", 56324)
        assert await asyncio.get_running_loop().sock_recv(a, 100) == AFTER
    finally:
        a.close()
        b.close()


class Echo(asyncio.Protocol):
    """Says who it thinks the client is, then echoes."""

    def __init__(self, client: Address) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tls = transport.get_extra_info("ssl_object") is not None
        transport.write(f"hello {self.client[0]} {self.client[1]} tls={tls}\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    return settings_server_context(ServiceSettings(data_dir=tmp_path))


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
async def servers(
    server_tls: ssl.SSLContext,
) -> AsyncIterator[tuple[ProxiedServer, ProxiedServer]]:
    plain = await start_proxied_server(
        Echo, "127.0.0.1", 0, header_timeout=0.5, trusted_networks=LOOPBACK, name="plain"
    )
    tls = await start_proxied_server(
        Echo,
        "127.0.0.1",
        0,
        tls=server_tls,
        tls_handshake_timeout=5,
        header_timeout=0.5,
        trusted_networks=LOOPBACK,
        name="tls",
    )
    yield plain, tls
    for s in (plain, tls):
        s.close()
        await s.wait_closed()
    assert not plain.is_serving()


def port(server: ProxiedServer) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_listener_plain(servers: tuple[ProxiedServer, ProxiedServer]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port(servers[0]))
    # Header and the first command in one segment, as HAProxy sends them.
    writer.write(v2_tcp4("192.0.2.10", "198.51.100.1", 40000, 25) + b"ping\r\n")
    assert await reader.readline() == b"hello 192.0.2.10 40000 tls=False\r\n"
    assert await reader.readline() == b"ping\r\n"
    writer.close()


async def test_listener_local_health_check(servers: tuple[ProxiedServer, ProxiedServer]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port(servers[0]))
    own_port = writer.get_extra_info("sockname")[1]
    writer.write(v2(0x0, 0x00, b""))
    assert await reader.readline() == f"hello 127.0.0.1 {own_port} tls=False\r\n".encode()
    writer.close()


@pytest.mark.parametrize("data", [b"", b"EHLO x\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"])
async def test_listener_closes_without_a_word(
    servers: tuple[ProxiedServer, ProxiedServer], data: bytes
) -> None:
    # Missing (the timeout), foreign or invalid header: closed, nothing sent, not even an error.
    reader, writer = await asyncio.open_connection("127.0.0.1", port(servers[0]))
    writer.write(data)
    assert await read_until_closed(reader) == b""
    writer.close()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """All the server sent before it closed; a close with unread input is a reset (RST)."""
    got = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), 5):
            got += chunk
    except ConnectionResetError:
        pass
    return got


async def test_listener_tls_after_header_same_segment(
    servers: tuple[ProxiedServer, ProxiedServer], client_tls: ssl.SSLContext
) -> None:
    """The header precedes the handshake, and the ClientHello arriving in the same segment as
    the header must reach TLS intact (the header reader takes no byte beyond the header)."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls.wrap_bio(incoming, outgoing)
    sock = socket.create_connection(("127.0.0.1", port(servers[1])))
    sock.setblocking(False)
    try:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        assert hello[:1] == b"\x16"  # a TLS handshake record
        await loop.sock_sendall(sock, b"PROXY TCP6 2001:db8::10 2001:db8::1 50000 993\r\n" + hello)
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert data, "server closed during the handshake"
            incoming.write(data)
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await loop.sock_sendall(sock, outgoing.read())
        await loop.sock_sendall(sock, outgoing.read())
        got = b""
        while b"\r\n" not in got:
            incoming.write(await asyncio.wait_for(loop.sock_recv(sock, 65536), 5))
            try:
                got += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
        assert got == b"hello 2001:db8::10 50000 tls=True\r\n"
    finally:
        sock.close()


async def test_listener_tls_client_library(
    servers: tuple[ProxiedServer, ProxiedServer], client_tls: ssl.SSLContext
) -> None:
    # The usual ordering: header, then a normal client handshake (asyncio's start_tls).
    reader, writer = await asyncio.open_connection("127.0.0.1", port(servers[1]))
    writer.write(v2_tcp4("192.0.2.10", "198.51.100.1", 40000, 993))
    await writer.drain()
    await writer.start_tls(client_tls)
    assert await reader.readline() == b"hello 192.0.2.10 40000 tls=True\r\n"
    writer.close()


async def test_listener_tls_header_must_precede_tls(
    servers: tuple[ProxiedServer, ProxiedServer], client_tls: ssl.SSLContext
) -> None:
    # A client that starts TLS at once (no header) is cut off, not answered.
    _, writer = await asyncio.open_connection("127.0.0.1", port(servers[1]))
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await asyncio.wait_for(writer.start_tls(client_tls), 5)
    writer.close()


async def test_close_drops_connections_still_in_the_header() -> None:
    server = await start_proxied_server(
        Echo, "127.0.0.1", 0, header_timeout=30, trusted_networks=LOOPBACK, name="p"
    )
    bound = port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", bound)
    writer.write(b"PROXY TCP4 ")
    await asyncio.sleep(0.1)
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert await read_until_closed(reader) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", bound)


async def test_stream_factory_passes_the_client() -> None:
    seen: list[Address] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Address
    ) -> None:
        seen.append(client)
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await start_proxied_server(
        stream_protocol_factory(handler, limit=1024),
        "127.0.0.1",
        0,
        header_timeout=1,
        trusted_networks=LOOPBACK,
        name="streams",
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
        writer.write(b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 110\r\nUSER x\r\n")
        assert await reader.readline() == b"USER x\r\n"
        assert seen == [("192.0.2.10", 56324)]
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_networks_parse_and_match() -> None:
    nets = parse_networks("10.0.0.0/8, 192.0.2.7 fd00::/8")
    assert in_networks("10.1.2.3", nets)
    assert in_networks("192.0.2.7", nets)
    assert not in_networks("192.0.2.8", nets)
    assert in_networks("fd00::1", nets)
    assert in_networks("::ffff:10.9.9.9", nets)  # IPv4-mapped: the IPv4 rule applies
    assert not in_networks("127.0.0.1", nets)
    assert not in_networks("not-an-ip", nets)
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks("10.0.0.0/8, 10.0.0.0/33")


async def test_untrusted_peer_closed_before_reading() -> None:
    server = await start_proxied_server(
        Echo,
        "127.0.0.1",
        0,
        header_timeout=5,
        trusted_networks=parse_networks("192.0.2.0/24"),
        name="untrusted",
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
        writer.write(b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 110\r\nhello\r\n")
        assert await read_until_closed(reader) == b""
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
