"""Server-side SASL for SMTP, IMAP and POP3: PLAIN (RFC 4616), LOGIN, SCRAM-SHA-256 (RFC 7677).

Mechanisms are I/O-free state machines (:mod:`.plain`, :mod:`.login`, :mod:`.scram`) looked up
in :mod:`.registry`; :func:`.exchange.run_exchange` drives one over a protocol's framing, on
every edge.
"""

from __future__ import annotations

from postmesh.common.sasl.exchange import (
    AuthVerdict,
    Outcome,
    Verifier,
    decode_b64,
    decode_initial,
    run_exchange,
)
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
    "create",
    "decode_b64",
    "decode_initial",
    "offered",
    "run_exchange",
]
