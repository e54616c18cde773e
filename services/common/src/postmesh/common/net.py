"""Connection facts shared by the protocol edges."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def plaintext_auth_allowed(peer_host: str | None, tls_active: bool) -> bool:
    """As Dovecot's ``disable_plaintext_auth``: passwords only over TLS, except from loopback,
    which cannot be sniffed on the wire."""
    return tls_active or is_loopback(peer_host)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """A comma- or space-separated CIDR list ("10.0.0.0/8, fd00::/8"); a bare address is a
    one-host network. Raises ValueError naming the item that is not a network."""
    nets = []
    for item in text.replace(",", " ").split():
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as e:
            raise ValueError(f"{item!r} is not an IP network in CIDR form: {e}") from e
    return tuple(nets)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """True if ``host`` (an IP address, IPv4-mapped IPv6 seen as IPv4) is in one of them."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in networks)
