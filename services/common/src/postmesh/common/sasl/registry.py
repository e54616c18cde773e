"""The server mechanisms by name, and which of them a connection may offer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from postmesh.common.sasl.login import LoginMechanism
from postmesh.common.sasl.plain import PlainMechanism
from postmesh.common.sasl.scram import ScramSha256Mechanism
from postmesh.common.sasl.steps import Step


class ServerMechanism(Protocol):
    name: str
    # True when the password travels (base64 is no protection): offered only where
    # postmesh.common.net.plaintext_auth_allowed says so (RFC 4954 §4, RFC 5034 §6).
    plaintext: bool

    def start(self, initial: bytes | None) -> Step: ...

    def respond(self, data: bytes) -> Step: ...


# Strongest first: clients commonly pick the first one they support.
MECHANISMS: dict[str, Callable[[], ServerMechanism]] = {
    "SCRAM-SHA-256": ScramSha256Mechanism,
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
}


def offered(plaintext_ok: bool, enabled: tuple[str, ...] | None = None) -> list[str]:
    """Mechanism names to advertise on a connection, in preference order."""
    names = [n for n in MECHANISMS if enabled is None or n in enabled]
    return [n for n in names if plaintext_ok or not MECHANISMS[n]().plaintext]


def create(name: str) -> ServerMechanism | None:
    factory = MECHANISMS.get(name.upper())
    return factory() if factory else None
