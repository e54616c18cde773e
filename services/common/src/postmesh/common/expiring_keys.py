"""Keys remembered for a while: a bounded set whose members leave ``ttl`` seconds after they
were last added, or, past ``max_keys``, oldest first. For answers that hold for a few seconds
whatever the key (a domain auth called remote, a sender a session's user owns; ADRs 44, 53)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ExpiringKeys(Generic[K]):
    def __init__(self, ttl: float, max_keys: int, clock: Callable[[], float] | None = None) -> None:
        """``ttl`` <= 0 remembers nothing."""
        self.ttl = ttl
        self.max_keys = max_keys
        self._clock = clock or time.monotonic
        self._until: OrderedDict[K, float] = OrderedDict()

    def __contains__(self, key: K) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        return True

    def add(self, key: K) -> None:
        if self.ttl <= 0:
            return
        self._until[key] = self._clock() + self.ttl
        self._until.move_to_end(key)
        while len(self._until) > self.max_keys:
            self._until.popitem(last=False)
