"""A bounded map that forgets its least recently used entries first: for values a process may
keep as long as it likes because whoever uses them checks them (or can do without them).

Bounded by entries, or by a weight per value (``weight``: e.g. the rows a listing holds); a value
heavier than the whole bound is not kept."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


class Lru(Generic[K, V]):
    def __init__(self, max_weight: int, weight: Callable[[V], int] = _one) -> None:
        self.max_weight = max_weight
        self._weight_of = weight
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = self._weight_of(value)
        if weight > self.max_weight:
            return
        self._entries[key] = (value, weight)
        self._weight += weight
        while self._weight > self.max_weight:
            _, (_, old) = self._entries.popitem(last=False)
            self._weight -= old

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, if it was kept."""
        found = self._entries.pop(key, None)
        if found is None:
            return None
        self._weight -= found[1]
        return found[0]

    def clear(self) -> None:
        self._entries.clear()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept (its recency unchanged)."""
        return key in self._entries
