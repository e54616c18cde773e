"""RFC 8689 for outbound mail: what a message asks of its next hop. REQUIRETLS (the MAIL FROM
parameter, carried from the edge in InboundMessage.requiretls) wants verified TLS to a host that
offers REQUIRETLS; the ``TLS-Required: No`` header field wants delivery even where the
recipient domain's MTA-STS policy would refuse for TLS reasons. REQUIRETLS wins over the header
(§4.1)."""

from __future__ import annotations

import re
from enum import Enum

from postmesh.delivery.smtp_client import Reply


class TlsPolicy(Enum):
    # Opportunistic STARTTLS, MTA-STS enforced when the domain publishes enforce.
    DEFAULT = "default"
    # RFC 8689 §4.2.1: verified TLS, MX validated, REQUIRETLS offered; else no delivery.
    REQUIRETLS = "requiretls"
    # RFC 8689 §4.2.2 "TLS-Required: No": STARTTLS when possible, never fail for TLS.
    TLS_OPTIONAL = "tls_optional"


# RFC 5322 field: name ":" value, continued by lines starting with WSP (folding).
_FIELD = re.compile(
    rb"^TLS-Required[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)


def header_section(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def tls_required_no(content: bytes) -> bool:
    """The header section has ``TLS-Required: No`` (RFC 8689 §5; the value is
    case-insensitive, as header keywords are)."""
    for m in _FIELD.finditer(header_section(content)):
        if m.group(1).replace(b"\r\n", b"").strip().lower() == b"no":
            return True
    return False


def tls_policy(requiretls: bool, content: bytes) -> TlsPolicy:
    if requiretls:
        # §4.1: with the MAIL FROM parameter the header field is ignored (kept in the content).
        return TlsPolicy.REQUIRETLS
    return TlsPolicy.TLS_OPTIONAL if tls_required_no(content) else TlsPolicy.DEFAULT


# RFC 8689 §4.2.1: the status codes of a REQUIRETLS failure (RFC 5248 registry).
def not_offered(where: str) -> Reply:
    return Reply(550, f"5.7.30 REQUIRETLS support required: {where} does not offer REQUIRETLS")


def no_secure_session(why: str) -> Reply:
    return Reply(550, f"5.7.10 REQUIRETLS: encryption needed: {why}")
