"""One way to build a DNS resolver for every service: dnspython's async resolver, pointed at
POSTMESH_DNS_SERVERS (``host:port,...``; IPv6 as ``[addr]:port``) or at the system's resolver
configuration when that is empty. Delivery uses it for MX, A/AAAA and MTA-STS TXT; smtp-edge
for SPF and DMARC."""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.nameserver
import dns.resolver


def parse_dns_servers(value: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:5353, [::1]:53, 10.0.0.2"`` -> ``[("127.0.0.1", 5353), ("::1", 53), ...]``.
    Raises ValueError naming the bad item: the servers must be IP addresses (a resolver cannot
    resolve the names of its own servers)."""
    servers: list[tuple[str, int]] = []
    for item in (s.strip() for s in value.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"bad DNS server {item!r}: expected [address]:port")
            if rest:
                port = _port(item, rest[1:])
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = _port(item, p)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"bad DNS server {item!r}: not an IP address") from None
        servers.append((host, port))
    return servers


def _port(item: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad DNS server {item!r}: port must be 1-65535")
    return int(text)


def make_resolver(
    servers: str, timeout_seconds: float = 5.0, cache_entries: int = 0
) -> dns.asyncresolver.Resolver:
    """A resolver on ``servers`` (the POSTMESH_DNS_SERVERS syntax), or the system's when empty.
    dnspython takes one port for all nameservers unless each is a Nameserver object, so a
    per-server port becomes a Do53Nameserver. ``cache_entries`` > 0: answers are cached (at
    most that many, least recently used dropped) for their TTL, negative ones for the SOA
    minimum (RFC 2308 §5; 300 s when a reply has no SOA, dnspython's default); errors and
    timeouts are never cached."""
    parsed = parse_dns_servers(servers)
    if not parsed:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in parsed]
    resolver.lifetime = timeout_seconds
    resolver.timeout = min(timeout_seconds, 2.0)
    if cache_entries > 0:
        resolver.cache = dns.resolver.LRUCache(cache_entries)
    return resolver
