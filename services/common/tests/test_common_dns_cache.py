"""make_resolver's cache against a tiny DNS responder on 127.0.0.1 that counts the queries."""

from __future__ import annotations

import asyncio
from typing import cast

import dns.message
import dns.rrset

from postmesh.common.dns import make_resolver


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
