"""Where a remote domain's mail goes: its MX hosts (RFC 5321 §5.1), or a relayhost / transport
override with Postfix's syntax (``[host]:port`` means no MX look-up, as in transport(5))."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NextHop:
    """``host`` is a domain whose MX records are looked up when ``mx_lookup``, else the host to
    connect to (a name resolved with A/AAAA, or an address)."""

    host: str
    port: int
    mx_lookup: bool
    # True for the domain's own MX routing (MTA-STS applies); False for an operator's route.
    direct_to_domain: bool = False

    @property
    def key(self) -> str:
        """The destination that concurrency limits and connection reuse are counted by."""
        return f"{self.host}:{self.port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_nexthop(text: str, default_port: int) -> NextHop:
    """``host``, ``host:port``, ``[host]``, ``[host]:port``, ``[::1]:port``, ``1.2.3.4:port``."""
    s = text.strip()
    if not s:
        raise ValueError("empty next hop")
    port = default_port
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"bad next hop {text!r}")
        if rest:
            port = _port(text, rest[1:])
        return NextHop(host.lower().rstrip("."), port, mx_lookup=False)
    if s.count(":") == 1:
        s, _, p = s.partition(":")
        port = _port(text, p)
    if not s or any(c in s for c in " /;=,[]"):
        raise ValueError(f"bad next hop {text!r}")
    return NextHop(s.lower().rstrip("."), port, mx_lookup=not _is_ip(s))


def _port(text: str, p: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"bad port in next hop {text!r}")
    return int(p)


def parse_transport_map(text: str, default_port: int) -> dict[str, NextHop]:
    """``example.com=[mx.internal]:25,.example.net=relay.example.org`` -> domain -> next hop."""
    routes: dict[str, NextHop] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        domain, sep, hop = item.partition("=")
        domain = domain.strip().lower().rstrip(".")
        if not sep or not domain or domain == ".":
            raise ValueError(f"bad transport map entry {item!r}: expected domain=host:port")
        routes[domain] = parse_nexthop(hop, default_port)
    return routes


class Router:
    """transport map, then relayhost, then the domain's MX records (Postfix's order)."""

    def __init__(self, relayhost: str, transport_map: str, port: int) -> None:
        self.port = port
        self.relayhost = parse_nexthop(relayhost, port) if relayhost.strip() else None
        self.routes = parse_transport_map(transport_map, port)

    def nexthop(self, domain: str) -> NextHop:
        domain = domain.lower().rstrip(".")
        if domain.startswith("[") and domain.endswith("]"):
            # RFC 5321 §4.1.3 address literal: no DNS, straight to that address.
            literal = domain[1:-1]
            if literal.startswith("ipv6:"):
                literal = literal[5:]
            return NextHop(literal, self.port, mx_lookup=False, direct_to_domain=True)
        if domain in self.routes:
            return self.routes[domain]
        # A ".parent" entry matches every subdomain, the nearest parent first.
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = "." + ".".join(labels[i:])
            if parent in self.routes:
                return self.routes[parent]
        if self.relayhost is not None:
            return self.relayhost
        return NextHop(domain, self.port, mx_lookup=True, direct_to_domain=True)
