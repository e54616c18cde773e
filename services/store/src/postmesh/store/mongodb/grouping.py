"""Group commit of the writes that wait for one mailbox's lock.

Deliveries into one mailbox serialise on its lock (UIDs must become visible in ascending
order), and each write under it is a round trip that PostgreSQL makes durable (fsync) before
FerretDB answers. So whoever gets the lock takes every delivery queued behind it and writes
them together: one allocation of n UIDs, one insert of n messages, one removal of the pending
marks. The per-delivery records and marks stay as they are, so a crash anywhere in a group
leaves each delivery exactly where a crash of a lone one would (``delivery.py``).

Each mailbox with deliveries queued has one writer: a task of its own (not any caller's), which
takes the queue a group at a time until it is empty. So a caller whose deadline passes leaves
alone, and the group being written for it and the others still gets written; when the caller
wrote the group itself, its cancellation failed the whole group, and under load every retry of
it came back into the same queue (ADR 55). A writer stops in the same step as it finds the queue
empty, so a delivery queued after that starts a new one: nobody waits for a group that no task
will write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from postmesh.store.errors import Unavailable

# Deliveries per group: one insert of this many message documents is a few hundred KiB at most.
MAX_GROUP = 64


@dataclass(eq=False)
class Waiter:
    item: Any
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    taken: bool = False

    def __post_init__(self) -> None:
        # Nobody may be left to await a waiter whose caller was cancelled.
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def settle(self, result: Any) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if isinstance(error, asyncio.CancelledError):
            # The task writing the group was cancelled (its caller's deadline), not this one.
            error = Unavailable("the grouped write was interrupted; retry")
        if not self.future.done():
            self.future.set_exception(error)


class Groups:
    """Waiters queued per key (a mailbox id), in arrival order."""

    def __init__(self, limit: int = MAX_GROUP) -> None:
        self._queued: dict[Any, list[Waiter]] = {}
        self._limit = limit
        self._writers: dict[Any, asyncio.Task[None]] = {}

    def ensure_writer(self, key: Any, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``write`` as the key's writer unless one is running."""
        if key not in self._writers:
            self._writers[key] = asyncio.create_task(write())

    def next_group(self, key: Any) -> list[Waiter]:
        """For the key's writer: :meth:`take`, and if nothing is queued, the writer is done
        from this moment (the next :meth:`ensure_writer` starts another)."""
        group = self.take(key)
        if not group:
            self._writers.pop(key, None)
        return group

    def writer_gone(self, key: Any) -> list[Waiter]:
        """The key's writer ends early (cancelled): the waiters still queued, to fail."""
        self._writers.pop(key, None)
        left: list[Waiter] = []
        while group := self.take(key):
            left.extend(group)
        return left

    async def stop(self) -> None:
        """Cancel every writer and wait for them (a store shutting down)."""
        tasks = list(self._writers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def join(self, key: Any, item: Any) -> Waiter:
        waiter = Waiter(item)
        self._queued.setdefault(key, []).append(waiter)
        return waiter

    def take(self, key: Any) -> list[Waiter]:
        """The next group (the oldest waiters, at most ``limit``), marked taken."""
        queued = self._queued.get(key, [])
        group, rest = queued[: self._limit], queued[self._limit :]
        if rest:
            self._queued[key] = rest
        else:
            self._queued.pop(key, None)
        for waiter in group:
            waiter.taken = True
        return group

    def leave(self, key: Any, waiter: Waiter) -> None:
        """Withdraw a waiter not taken (its caller gave up before getting the lock)."""
        queued = self._queued.get(key)
        if queued and waiter in queued:
            queued.remove(waiter)
            if not queued:
                del self._queued[key]
