"""Values read from a shared database, kept per process until that database says they may have
changed (ADRs 45 and 55).

A kept value stops being used when any of these happens first:
- a write through this process changed what the values are read from (``forget_all``, called
  by the writers);
- the backend's change stamp, read at most once per ``check_seconds``, differs from the one the
  values were kept under (a write through another replica, which replaces the stamp after its
  write);
- it is ``ttl_seconds`` old (the bound if a stamp write was lost, e.g. a crash between a write
  and its stamp).
So another replica's change is seen within about ``check_seconds``, as Dovecot's auth cache with
a TTL, but bounded by the stamp rather than the TTL. Only values ``keep`` accepts are kept: a
caller keeps answers that cannot become wrong without a stamp change.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class StampedCache(Generic[K, V]):
    def __init__(
        self,
        read_stamp: Callable[[], Awaitable[str]],
        ttl_seconds: float,
        *,
        check_seconds: float = 1.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_stamp = read_stamp
        self._ttl = ttl_seconds
        self._check = check_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._stamp: str | None = None
        self._checked_at = -check_seconds
        # Bumped by every flush: a value read before a flush is not kept after it.
        self._epoch = 0

    async def get(
        self, key: K, load: Callable[[K], Awaitable[V]], keep: Callable[[V], bool]
    ) -> tuple[V, bool]:
        """The value of ``key`` and whether it came from the cache; ``load`` reads it when it
        is not kept (or no longer valid), and it is kept if ``keep`` says so."""
        await self._check_stamp()
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[1] < self._ttl:
            self._entries.move_to_end(key)
            return hit[0], True
        epoch = self._epoch
        value = await load(key)
        if keep(value) and epoch == self._epoch:
            self._entries[key] = (value, now)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return value, False

    def forget_all(self) -> None:
        self._entries.clear()
        self._epoch += 1

    async def _check_stamp(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._check:
            return
        # Set first: the calls meanwhile use the current values instead of all asking again.
        self._checked_at = now
        stamp = await self._read_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.forget_all()
