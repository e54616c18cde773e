"""Identical calls made while one is running share its result ("single flight").

For a look-up whose answer does not depend on who asks: the callers that ask for the same key
while a call for it is under way await that call instead of making their own, so the answer is
at most one call's duration older than a call of their own would have given. Nothing is kept
once the call is done: the next caller asks again. A failure reaches every caller that shared
the call; a caller that goes away does not cancel the call for the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedCalls(Generic[K, V]):
    """``await shared(key)`` runs ``call(key)`` or joins the run under way for ``key``.
    ``await shared.share(key, start)`` does the same for a call whose arguments are not its key
    (a digest standing for a secret, say): ``start()`` begins it when none is running.
    ``on_shared`` is told of each caller that joined a run (a metric)."""

    def __init__(
        self,
        call: Callable[[K], Awaitable[V]] | None = None,
        on_shared: Callable[[], None] | None = None,
    ) -> None:
        self._call = call
        self._on_shared = on_shared
        self._running: dict[K, asyncio.Future[V]] = {}
        # Callers answered by a call someone else started (for metrics and tests).
        self.shared = 0

    async def __call__(self, key: K) -> V:
        call = self._call
        if call is None:
            raise TypeError("SharedCalls made without a call: use share(key, start)")
        return await self.share(key, lambda: call(key))

    async def share(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(start())
            self._running[key] = running
            running.add_done_callback(lambda done: self._settled(key, done))
        else:
            self.shared += 1
            if self._on_shared is not None:
                self._on_shared()
        # Shielded: one caller cancelled (a deadline, a shutdown) leaves the others' call be.
        return await asyncio.shield(running)

    def _settled(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: the callers get it from the future itself

    @property
    def running(self) -> int:
        return len(self._running)
