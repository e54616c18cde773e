"""The receiving side of HAProxy's PROXY protocol, versions 1 (text) and 2 (binary), as specified in
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt ("the spec" below).

Behind a TCP load balancer (a Kubernetes Service of type LoadBalancer) the edges see the balancer
as their TCP peer; the balancer then sends one PROXY header naming the real client before any
other byte. The spec's rules followed here:

- §1: the receiver must only accept connections that carry a header (never guess), must not
  process the connection (no greeting) before a complete valid header, and may time out.
- §2.1, §2.2: anything that does not match the format exactly aborts the connection.
- The header precedes everything, TLS included: on an implicit-TLS listener it is read from the
  raw socket and the handshake starts after it. That is why :class:`ProxiedServer` accepts the
  sockets itself: it reads exactly the header's bytes (never a byte of the TLS ClientHello that
  may follow in the same segment) and then hands the socket to
  ``loop.connect_accepted_socket``, which runs the TLS handshake and the protocol as
  ``loop.create_server`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from postmesh.common.logging import get_logger, kv
from postmesh.common.net import Network, in_networks

log = get_logger(__name__)

# (host, port) of a TCP endpoint, host in its canonical text form.
Address = tuple[str, int]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# §2.1: the longest valid v1 line, CRLF included ("PROXY UNKNOWN" with two IPv6 addresses).
V1_MAX_BYTES = 107
# Both versions are told apart by their first bytes; 6 is below either's minimum length
# (15 for "PROXY UNKNOWN\r\n", 16 for v2), so this read never takes a byte past the header.
_PREFIX_BYTES = 6
_V2_FIXED_BYTES = 16
# §2.2: the v2 command (low nibble of the 13th byte).
_V2_LOCAL = 0x0
_V2_PROXY = 0x1
# §2.2: family (high nibble) and transport (low nibble) of the 14th byte.
_AF_INET, _AF_INET6, _AF_UNIX = 0x1, 0x2, 0x3
_STREAM = 0x1
_V2_ADDRESS_BYTES = {_AF_INET: 12, _AF_INET6: 36}

# §2.1: "Heading zeroes are not permitted" in IPv4 octets and ports.
_V1_IPV4 = re.compile(rb"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:]{2,39}")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


REFUSED = Counter(
    "postmesh_proxy_connections_refused_total",
    "Connections to a PROXY-protocol listener closed unanswered: reason=untrusted (the peer is "
    "not in POSTMESH_PROXY_TRUSTED_NETWORKS) or invalid (no valid header).",
    ["listener", "reason"],
)


class ProxyHeaderError(Exception):
    """No valid PROXY header: the connection must be closed without a greeting.

    ``empty``: the peer closed without sending a byte, as a load balancer's plain TCP health
    check does: not worth a warning."""

    def __init__(self, message: str, *, empty: bool = False) -> None:
        super().__init__(message)
        self.empty = empty


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    version: int  # 1 or 2
    # The original connection's endpoints, or None when the header says to use the
    # connection's own (v2 LOCAL health checks, v1 UNKNOWN, v2 UNSPEC/UNIX/UDP).
    source: Address | None
    destination: Address | None
    # v2 LOCAL: a connection the proxy made itself (a health check), not a relayed one.
    local: bool = False

    def client(self, peer: Address) -> Address:
        """The client to act for: the relayed source, or else the TCP peer."""
        return self.source if self.source is not None else peer


ReadExactly = Callable[[int], Awaitable[bytes]]


async def read_header(readexactly: ReadExactly, timeout: float) -> ProxyHeader:
    """Read and validate one PROXY header (v1 or v2) through ``readexactly(n)``, which returns
    exactly n bytes or raises asyncio.IncompleteReadError at the end of the stream.

    Never asks for a byte beyond the header, so what follows stays unread for the protocol (or
    the TLS handshake). Raises :class:`ProxyHeaderError` on a missing, invalid or late header.
    """
    prefix = b""
    try:
        async with asyncio.timeout(timeout):
            prefix = await readexactly(_PREFIX_BYTES)
            if prefix == b"PROXY ":
                return _parse_v1(await _read_v1_line(readexactly, prefix))
            if prefix == V2_SIGNATURE[:_PREFIX_BYTES]:
                fixed = prefix + await readexactly(_V2_FIXED_BYTES - _PREFIX_BYTES)
                return await _read_v2(readexactly, fixed)
            raise ProxyHeaderError(f"no PROXY header (connection starts with {prefix!r})")
    except TimeoutError:
        raise ProxyHeaderError(f"no PROXY header within {timeout:g}s") from None
    except asyncio.IncompleteReadError as e:
        if not prefix and not e.partial:
            raise ProxyHeaderError(
                "connection closed before sending anything", empty=True
            ) from None
        raise ProxyHeaderError("connection closed inside the PROXY header") from None
    except ConnectionError as e:
        raise ProxyHeaderError(f"connection lost inside the PROXY header ({e!r})") from None


async def read_header_from_stream(reader: asyncio.StreamReader, timeout: float) -> ProxyHeader:
    """:func:`read_header` on a StreamReader; the bytes after the header stay in the reader."""
    return await read_header(reader.readexactly, timeout)


async def read_header_from_socket(sock: socket.socket, timeout: float) -> ProxyHeader:
    """:func:`read_header` on a raw non-blocking socket, before any transport (or TLS) owns it."""
    loop = asyncio.get_running_loop()

    async def readexactly(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(sock, n - len(buf))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)

    return await read_header(readexactly, timeout)


# ---- version 1 (§2.1) ---------------------------------------------------------------------------


async def _read_v1_line(readexactly: ReadExactly, prefix: bytes) -> bytes:
    line = bytearray(prefix)
    while not line.endswith(b"\r\n"):
        if len(line) >= V1_MAX_BYTES:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX_BYTES} bytes")
        # At least two more bytes belong to the line (its CRLF) unless it already ends in CR:
        # reading no further than that never takes a byte of what follows the header.
        want = 1 if line.endswith(b"\r") else 2
        line += await readexactly(min(want, V1_MAX_BYTES - len(line)))
    return bytes(line)


def _parse_v1(line: bytes) -> ProxyHeader:
    body = line[:-2]
    # §2.1: a lone CR or LF does not end the line, and nothing else may hide inside it.
    if b"\r" in body or b"\n" in body:
        raise ProxyHeaderError("PROXY v1 line has a bare CR or LF")
    fields = body.split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        # §2.1: "the receiver must ignore anything presented before the CRLF" and use the
        # connection's own endpoints.
        return ProxyHeader(version=1, source=None, destination=None)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 line {line[:60]!r}")
    v6 = fields[1] == b"TCP6"
    src = _v1_host(fields[2], v6)
    dst = _v1_host(fields[3], v6)
    return ProxyHeader(
        version=1, source=(src, _v1_port(fields[4])), destination=(dst, _v1_port(fields[5]))
    )


def _v1_host(text: bytes, v6: bool) -> str:
    pattern = _V1_IPV6 if v6 else _V1_IPV4
    try:
        if not pattern.fullmatch(text):
            raise ValueError(text)
        addr = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(f"bad {'IPv6' if v6 else 'IPv4'} address {text!r}") from None
    if addr.version != (6 if v6 else 4):
        raise ProxyHeaderError(f"address {text!r} is not of the announced family")
    return _canonical(addr)


def _v1_port(text: bytes) -> int:
    if not _V1_PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text!r}")
    return int(text)


# ---- version 2 (§2.2) ---------------------------------------------------------------------------


async def _read_v2(readexactly: ReadExactly, fixed: bytes) -> ProxyHeader:
    if fixed[:12] != V2_SIGNATURE:
        raise ProxyHeaderError(f"bad PROXY v2 signature {fixed[:12]!r}")
    version, command = fixed[12] >> 4, fixed[12] & 0xF
    family, transport = fixed[13] >> 4, fixed[13] & 0xF
    if version != 2:
        raise ProxyHeaderError(f"unsupported PROXY version {version}")
    # "Receivers must drop connections presenting unexpected values here."
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"unknown PROXY v2 command {command:#x}")
    if family > _AF_UNIX or transport > 0x2:
        raise ProxyHeaderError(f"unknown PROXY v2 family/transport {fixed[13]:#04x}")
    # Always read the announced length, LOCAL included ("must not assume zero"); what follows
    # the addresses are TLVs (§2.2.x: ALPN, authority, SSL, ...), which nothing here needs.
    length = int.from_bytes(fixed[14:16], "big")
    block = await readexactly(length) if length else b""
    if command == _V2_LOCAL:
        # A health check from the balancer itself: use the real endpoints, ignore the block.
        return ProxyHeader(version=2, source=None, destination=None, local=True)
    needed = _V2_ADDRESS_BYTES.get(family)
    if needed is None or transport != _STREAM:
        # UNSPEC, UNIX, or UDP: the spec lets a receiver fall back to UNSPEC, i.e. the
        # connection's own endpoints.
        return ProxyHeader(version=2, source=None, destination=None)
    if length < needed:
        raise ProxyHeaderError(f"PROXY v2 address block of {length} bytes, need {needed}")
    size = 4 if family == _AF_INET else 16
    src = ipaddress.ip_address(block[:size])
    dst = ipaddress.ip_address(block[size : 2 * size])
    sport = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(block[2 * size + 2 : 2 * size + 4], "big")
    return ProxyHeader(
        version=2, source=(_canonical(src), sport), destination=(_canonical(dst), dport)
    )


def _canonical(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # An IPv4 client relayed over IPv6 (::ffff:a.b.c.d) is that IPv4 client: loopback checks
    # and logs must see 127.0.0.1, not ::ffff:127.0.0.1.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# ---- the listener -------------------------------------------------------------------------------

# Builds the protocol of one connection, given the real client (host, port).
ProxiedProtocolFactory = Callable[[Address], asyncio.BaseProtocol]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Address], Awaitable[None]]

# As asyncio's own accept loop: after e.g. EMFILE, wait before accepting again.
_ACCEPT_RETRY_SECONDS = 1.0


class _Bound(Protocol):
    def getsockname(self) -> Any: ...


class Listener(Protocol):
    """What the edges use of a listener: asyncio.Server and ProxiedServer both have it."""

    @property
    def sockets(self) -> Sequence[_Bound]: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def is_serving(self) -> bool: ...


def _peer(sock: socket.socket, fallback: Any) -> Address:
    addr = fallback
    with contextlib.suppress(OSError):
        addr = sock.getpeername()
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        with contextlib.suppress(ValueError):
            host = _canonical(ipaddress.ip_address(host.split("%", 1)[0]))
        return host, int(addr[1])
    return str(addr), 0


class ProxiedServer:
    """A TCP listener for a port behind a PROXY-protocol-speaking load balancer: each accepted
    connection must start with a PROXY header (else it is closed unanswered and logged); then
    TLS (when ``tls`` is given: implicit TLS, RFC 8314), then ``factory(client)``'s protocol,
    exactly as ``loop.create_server`` would run it."""

    def __init__(
        self,
        factory: ProxiedProtocolFactory,
        *,
        tls: ssl.SSLContext | None = None,
        tls_handshake_timeout: float | None = None,
        header_timeout: float,
        trusted_networks: tuple[Network, ...],
        name: str,
    ) -> None:
        self._factory = factory
        self._trusted = trusted_networks
        self._tls = tls
        self._tls_handshake_timeout = tls_handshake_timeout if tls is not None else None
        self._header_timeout = header_timeout
        self._name = name
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        # Connections still reading their header or in the TLS handshake.
        self._pending: set[asyncio.Task[None]] = set()
        self._serving = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def is_serving(self) -> bool:
        return self._serving

    async def start(self, host: str, port: int, backlog: int = 100) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    # As asyncio: one socket per family, so "::" does not also take IPv4.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        self._serving = True
        self._accepting = [asyncio.create_task(self._accept_loop(s)) for s in self._sockets]

    def close(self) -> None:
        """Stop accepting; connections not yet past their header/handshake are dropped, those
        already running their protocol are left to it (as asyncio.Server.close)."""
        self._serving = False
        for task in (*self._accepting, *self._pending):
            task.cancel()
        self._close_sockets()

    async def wait_closed(self) -> None:
        tasks = [*self._accepting, *self._pending]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting = []

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            if sock.fileno() != -1:
                # Unregistered before the close, as asyncio.Server does: a cancelled
                # sock_accept would otherwise unregister its fd number later, when it may
                # already belong to a new connection.
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().remove_reader(sock.fileno())
                sock.close()

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(listening)
            except ConnectionAbortedError:
                continue  # the client gave up while queued (asyncio ignores it too)
            except OSError as e:
                if not self._serving:
                    return
                log.error("accept failed", extra=kv(listener=self._name, error=str(e)))
                await asyncio.sleep(_ACCEPT_RETRY_SECONDS)
                continue
            task = asyncio.create_task(self._connection(conn, addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connection(self, conn: socket.socket, addr: Any) -> None:
        conn.setblocking(False)
        peer = _peer(conn, addr)
        if not in_networks(peer[0], self._trusted):
            # Only a trusted balancer may name the client: anyone else could claim to be
            # loopback (and so get plaintext AUTH, ADR 4). Closed before a byte is read.
            REFUSED.labels(self._name, "untrusted").inc()
            log.warning(
                "PROXY protocol connection from an untrusted peer closed",
                extra=kv(listener=self._name, peer=f"{peer[0]}:{peer[1]}"),
            )
            conn.close()
            return
        try:
            header = await read_header_from_socket(conn, self._header_timeout)
        except ProxyHeaderError as e:
            # §1: no greeting, no guessing; the balancer (or whoever this is) sees a close.
            if not e.empty:
                REFUSED.labels(self._name, "invalid").inc()
            log.log(
                logging.DEBUG if e.empty else logging.WARNING,
                "connection without a valid PROXY header closed",
                extra=kv(listener=self._name, peer=f"{peer[0]}:{peer[1]}", error=str(e)),
            )
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        client = header.client(peer)
        log.debug(
            "PROXY header",
            extra=kv(
                listener=self._name,
                proxy=f"{peer[0]}:{peer[1]}",
                client=f"{client[0]}:{client[1]}",
                version=header.version,
                local=header.local,
            ),
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: self._factory(client),
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            # The transport closed the socket already; a failed handshake is the client's.
            log.info(
                "TLS handshake failed",
                extra=kv(listener=self._name, client=f"{client[0]}:{client[1]}", error=str(e)),
            )
            conn.close()


async def start_proxied_server(
    factory: ProxiedProtocolFactory,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    tls_handshake_timeout: float | None = None,
    header_timeout: float,
    trusted_networks: tuple[Network, ...],
    name: str,
) -> ProxiedServer:
    """A listening :class:`ProxiedServer` on host:port (port 0: any free port), taking
    connections only from ``trusted_networks``."""
    server = ProxiedServer(
        factory,
        tls=tls,
        tls_handshake_timeout=tls_handshake_timeout,
        header_timeout=header_timeout,
        trusted_networks=trusted_networks,
        name=name,
    )
    await server.start(host, port)
    return server


def stream_protocol_factory(handler: StreamHandler, limit: int) -> ProxiedProtocolFactory:
    """A factory running ``handler(reader, writer, client)`` per connection, as
    ``asyncio.start_server`` runs its callback with reader and writer."""

    def make(client: Address) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)

        def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
            return handler(r, w, client)

        return asyncio.StreamReaderProtocol(reader, connected, loop=loop)

    return make
