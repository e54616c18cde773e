"""The Received: trace header (RFC 5321 §4.4) the edge prepends to every accepted message."""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TlsFacts:
    version: str
    cipher: str
    bits: int


@dataclass(frozen=True, slots=True)
class ClientFacts:
    """What the session knows about the client when a message is accepted."""

    helo: str
    remote_ip: str
    listener: str  # "mx", "submission", "submissions"
    esmtp: bool
    tls: TlsFacts | None = None
    authenticated_user: str = ""
    # The forward-confirmed reverse DNS name of remote_ip, "" when it has none (RFC 8601 iprev).
    reverse_name: str = ""


def protocol_name(client: ClientFacts, smtputf8: bool) -> str:
    """The ``with`` keyword: ESMTP[S][A] (RFC 3848), UTF8SMTP[S][A] (RFC 6531 §4.3)."""
    if not client.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if client.tls else "") + ("A" if client.authenticated_user else "")


def _address_literal(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    if addr.version == 6:
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def _clean(text: str) -> str:
    """A client-chosen HELO name may be anything; keep the header one well-formed line of
    printable ASCII (HELO names are A-labels) with balanced comments."""
    out = "".join(c if (c.isascii() and c.isprintable() and c not in "()\\") else "?" for c in text)
    return out[:255] or "unknown"


def received_header(
    *,
    client: ClientFacts,
    hostname: str,
    queue_id: str,
    recipients: list[str],
    smtputf8: bool,
    when: datetime.datetime | None = None,
) -> bytes:
    """``Received: from helo (rdns [ip]) by host (Postmesh) with ESMTPSA id Q for <rcpt>; date``,
    folded with CRLF+TAB. ``for`` names the recipient only when there is one (as Postfix: a
    list of recipients would disclose Bcc)."""
    when = when or datetime.datetime.now(datetime.UTC)
    # RFC 5321 §4.4 TCP-info: the verified reverse name and the address; "unknown" as Postfix
    # when the address has no forward-confirmed name.
    rdns = _clean(client.reverse_name) if client.reverse_name else "unknown"
    lines = [f"Received: from {_clean(client.helo)} ({rdns} {_address_literal(client.remote_ip)})"]
    if client.tls:
        tls = client.tls
        lines.append(f"(using {tls.version} with cipher {tls.cipher} ({tls.bits} bits))")
    with_kw = protocol_name(client, smtputf8)
    lines.append(f"by {hostname} (Postmesh) with {with_kw} id {queue_id}")
    for_clause = f"for <{recipients[0]}>" if len(recipients) == 1 else ""
    date = email.utils.format_datetime(when)
    lines.append(f"{for_clause}; {date}" if for_clause else f"; {date}")
    header = "\r\n\t".join(lines[:-1]) + ("\r\n\t" + lines[-1] if for_clause else lines[-1])
    return (header + "\r\n").encode("utf-8")
