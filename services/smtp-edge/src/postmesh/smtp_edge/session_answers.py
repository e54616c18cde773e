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
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

KEPT = 256

K = TypeVar("K", bound=Hashable)


class SessionAnswers:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._owned: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._remote: OrderedDict[str, float] = OrderedDict()

    def owns(self, user: str, address: str) -> bool:
        return self._fresh(self._owned, (user.lower(), address.lower()))

    def remember_owner(self, user: str, address: str) -> None:
        self._keep(self._owned, (user.lower(), address.lower()))

    def remote(self, address: str) -> bool:
        return self._fresh(self._remote, _domain(address))

    def remember_remote(self, address: str) -> None:
        if _domain(address):
            self._keep(self._remote, _domain(address))

    def _fresh(self, table: OrderedDict[K, float], key: K) -> bool:
        until = table.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del table[key]
            return False
        return True

    def _keep(self, table: OrderedDict[K, float], key: K) -> None:
        if self.ttl <= 0:
            return
        table[key] = self._clock() + self.ttl
        table.move_to_end(key)
        while len(table) > KEPT:
            table.popitem(last=False)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
