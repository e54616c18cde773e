"""make_resolver's cache against a tiny DNS responder on 127.0.0.1 that counts the queries."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import dns.message
import dns.rcode
import dns.rrset

from postmesh.common.dns import make_resolver
from postmesh.common.mailauth.dnsclient import Answer, DnsClient


class Responder(asyncio.DatagramProtocol):
    """Answers every A query with 127.0.0.9 and the TTL of its name's first label."""

    def __init__(self) -> None:
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.queries += 1
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        ttl = int(name.labels[0].decode().removeprefix("ttl"))
        reply.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "127.0.0.9"))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


async def test_answers_are_cached_for_their_ttl_only_when_asked() -> None:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        Responder, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        cached = make_resolver(f"127.0.0.1:{port}", cache_entries=100)
        for _ in range(3):
            answer = await cached.resolve("ttl300.example.test", "A", search=False)
            assert [r.to_text() for r in answer] == ["127.0.0.9"]
        assert responder.queries == 1
        for _ in range(2):  # TTL 0: never served from the cache
            await cached.resolve("ttl0.example.test", "A", search=False)
        assert responder.queries == 3
        plain = make_resolver(f"127.0.0.1:{port}")
        for _ in range(2):
            await plain.resolve("ttl300.example.test", "A", search=False)
        assert responder.queries == 5
    finally:
        transport.close()


class NxResponder(Responder):
    """As :class:`Responder`, but a name starting with "nx" does not exist (SOA minimum 60)."""

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        query = dns.message.from_wire(data)
        if not query.question[0].name.labels[0].startswith(b"nx"):
            super().datagram_received(data, addr)
            return
        self.queries += 1
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.NXDOMAIN)
        soa = "ns.example.test. host.example.test. 1 3600 600 86400 60"
        reply.authority.append(dns.rrset.from_text("example.test.", 60, "IN", "SOA", soa))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)


async def test_dns_client_reuses_an_answer_only_while_dnspython_would() -> None:
    """DnsClient's own copy (ADR 59) expires with dnspython's entry: TTL 0 is asked every
    time, TTL 300 once until it expires, an NXDOMAIN for the SOA minimum."""
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        NxResponder, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    ahead = [0.0]  # seconds our client's clock is ahead of dnspython's
    try:
        client = DnsClient(
            f"127.0.0.1:{port}", 2.0, cache_entries=100, clock=lambda: time.time() + ahead[0]
        )
        for _ in range(3):
            assert await client.query("ttl300.example.test", "A") == Answer(["127.0.0.9"])
        assert responder.queries == 1
        for _ in range(2):
            assert await client.query("ttl0.example.test", "A") == Answer(["127.0.0.9"])
        assert responder.queries == 3
        for _ in range(3):
            assert await client.query("nx.example.test", "TXT") == Answer([], nxdomain=True)
        assert responder.queries == 4
        ahead[0] = 120  # past the NXDOMAIN's 60 s, within the A record's 300 s
        assert await client.query("ttl300.example.test", "A") == Answer(["127.0.0.9"])
        assert responder.queries == 4
        # Ours expired; dnspython's entry too by the real clock only later, so it answers
        # from its cache without a query, and the answer is the same.
        assert await client.query("nx.example.test", "TXT") == Answer([], nxdomain=True)
        assert responder.queries == 4
        uncached = DnsClient(f"127.0.0.1:{port}", 2.0)
        for _ in range(2):
            assert await uncached.query("ttl300.example.test", "A") == Answer(["127.0.0.9"])
        assert responder.queries == 6
    finally:
        transport.close()


async def test_dns_client_keeps_at_most_cache_entries_answers() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        client = DnsClient(f"127.0.0.1:{port}", 2.0, cache_entries=2)
        for label in ("a", "b", "c"):
            await client.query(f"ttl300.{label}.example.test", "A")
        assert len(client._answers) == 2
        assert ("ttl300.a.example.test", "A") not in client._answers
    finally:
        transport.close()


async def test_kept_answers_without_asking_only_what_query_would_reuse() -> None:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        Responder, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    ahead = [0.0]
    try:
        client = DnsClient(
            f"127.0.0.1:{port}", 2.0, cache_entries=100, clock=lambda: time.time() + ahead[0]
        )
        assert client.kept("ttl300.example.test", "A") is None
        await client.query("ttl300.example.test", "A")
        await client.query("ttl0.example.test", "A")
        assert client.kept("ttl300.example.test", "A") == Answer(["127.0.0.9"])
        assert client.kept("ttl0.example.test", "A") is None
        ahead[0] = 301
        assert client.kept("ttl300.example.test", "A") is None
        assert responder.queries == 2
    finally:
        transport.close()
