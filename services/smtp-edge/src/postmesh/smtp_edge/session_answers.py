"""What auth told one authenticated submission session, reused by its next transactions for a
few seconds (ADR 53).

A submission client sends message after message on one session, nearly always from the same
sender to the same few domains. Each message asked auth twice: who owns the envelope sender
(the sender check, RFC 6409 §6.1) at MAIL, and what the recipient is at RCPT, whose "remote"
answer the shared recipient cache never keeps (ADR 43: on the MX it would refuse mail for a
domain just made local). Within one authenticated session, for ``ttl`` seconds from when auth
answered:

- "this user owns this sender address" is reused, as a login is for the whole session;
  a refusal is never kept (a new alias works at once);
- "this domain is remote" is reused for its other addresses, as delivery does (ADR 44): an
  authenticated session may relay, so the answer only decides where the message goes, and
  delivery resolves it again.

Both are kept per session, keyed by the logged-in user, and at most :data:`KEPT` of each.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from postmesh.common.expiring_keys import ExpiringKeys

KEPT = 256


class SessionAnswers:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._owned: ExpiringKeys[tuple[str, str]] = ExpiringKeys(ttl, KEPT, clock)
        self._remote: ExpiringKeys[str] = ExpiringKeys(ttl, KEPT, clock)

    def owns(self, user: str, address: str) -> bool:
        return (user.lower(), address.lower()) in self._owned

    def remember_owner(self, user: str, address: str) -> None:
        self._owned.add((user.lower(), address.lower()))

    def remote(self, address: str) -> bool:
        return _domain(address) in self._remote

    def remember_remote(self, address: str) -> None:
        if domain := _domain(address):
            self._remote.add(domain)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
