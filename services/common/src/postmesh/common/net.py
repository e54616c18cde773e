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
