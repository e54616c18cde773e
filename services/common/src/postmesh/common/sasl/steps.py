"""What a server-side mechanism asks of its caller after each client message.

Mechanisms are state machines without I/O: they take the client's decoded bytes and answer
with one of these steps; :mod:`postmesh.common.sasl.exchange` carries them out over a
protocol's challenge/response framing and the auth service.
"""

from __future__ import annotations

from dataclasses import dataclass


class SaslError(ValueError):
    """The client's SASL data is malformed (answer 501 / BAD / -ERR)."""


class SaslCancelled(SaslError):
    """The client sent "*" (RFC 4954 §4, RFC 5034 §4, RFC 9051 §6.2.2)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client and feed its answer to ``respond``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CheckPassword:
    """Final step of PLAIN and LOGIN: the auth service checks the password."""

    authcid: str
    password: str


@dataclass(frozen=True, slots=True)
class NeedScramParams:
    """SCRAM needs the user's salt and iteration count before its first challenge."""

    username: str


@dataclass(frozen=True, slots=True)
class VerifyScramProof:
    """SCRAM's client proof, to be checked against the stored key by the auth service."""

    username: str
    auth_message: bytes
    proof: bytes


@dataclass(frozen=True, slots=True)
class Succeeded:
    """Authenticated; ``final_data`` (SCRAM's server signature) goes to the client as one last
    challenge that it answers with an empty response (RFC 4422 §5 "additional data")."""

    user: str
    final_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange ended without authentication (never says whether the user exists)."""

    reason: str


Step = Challenge | CheckPassword | NeedScramParams | VerifyScramProof | Succeeded | Failed
