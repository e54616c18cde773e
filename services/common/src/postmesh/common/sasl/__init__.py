"""Server-side SASL for SMTP, IMAP and POP3: PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256 (RFC 7677).

Mechanisms are I/O-free state machines (:mod:`.plain`, :mod:`.login`, :mod:`.scram`) looked up
in :mod:`.registry`; :func:`.exchange.run_exchange` drives one over a protocol's framing.
The helpers below are the older one-shot decoders some edges still call.
"""

from __future__ import annotations

import base64

from postmesh.common.sasl.exchange import (
    AuthVerdict,
    Outcome,
    Verifier,
    decode_b64,
    decode_initial,
    run_exchange,
)
from postmesh.common.sasl.plain import parse_plain
from postmesh.common.sasl.registry import MECHANISMS, ServerMechanism, create, offered
from postmesh.common.sasl.steps import SaslCancelled, SaslError

__all__ = [
    "MECHANISMS",
    "AuthVerdict",
    "Outcome",
    "SaslCancelled",
    "SaslError",
    "ServerMechanism",
    "Verifier",
    "b64decode_strict",
    "create",
    "decode_b64",
    "decode_initial",
    "decode_login_field",
    "decode_plain",
    "encode_challenge",
    "offered",
    "run_exchange",
]


def b64decode_strict(data: str | bytes) -> bytes:
    return decode_b64(data.decode("ascii", "replace") if isinstance(data, bytes) else data)


def decode_plain(response: str | bytes) -> tuple[str, str, str]:
    """``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2) -> (authzid, authcid, password)."""
    return parse_plain(b64decode_strict(response))


def decode_login_field(response: str | bytes) -> str:
    """One step of the LOGIN mechanism (base64 of the user name or of the password)."""
    try:
        value = b64decode_strict(response).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SaslError("LOGIN response is not UTF-8") from e
    if not value:
        raise SaslError("empty LOGIN response")
    return value


def encode_challenge(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
