"""RETR read-ahead through a byte-budgeted window (ADR 38).

The maildrop is fixed once the session holds its lock (RFC 1939 §8) and downloaders RETR it in
order, waiting for each response before the next command. So the messages after the one being
retrieved are read from the store ahead of their commands, many per store call
(GetMessageContents), instead of one store round trip per RETR.

Memory: the octets of the messages read ahead, whether received or still on their way, are
reserved against ``budget`` *before* each store call, so a session never holds more than
``budget`` octets of read-ahead content; a batch is read as fast as the store sends it (gRPC
flow control is not the bound). Until the client's first RETR (after LIST or UIDL) only the
first message is read ahead, and the session drops the window when its client goes idle
(:meth:`ReadAheadWindow.drop`): a session that waits holds at most one message, or nothing.

Anything unusual is invisible to the client: a message that is gone, a failing store call, a
message over ``max_message`` or out of order is simply not in the window, and RETR then reads
it itself and reports what it finds (-ERR for an expunged message, [SYS/TEMP] for the store).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from contextlib import aclosing

from postmesh.common.backend import BackendUnavailable
from postmesh.common.logging import get_logger, kv
from postmesh.pop3_gw.backend import MailBackend, MessageInfo

log = get_logger(__name__)


class ReadAheadWindow:
    """Messages are named by their session numbers (1..n, RFC 1939 §5); ``deleted`` tells which
    are marked deleted in the session (never read ahead, dropped when marked)."""

    def __init__(
        self,
        backend: MailBackend,
        user: str,
        messages: Sequence[MessageInfo],
        deleted: Callable[[int], bool],
        *,
        budget: int,
        max_message: int,
        max_batch: int,
    ) -> None:
        self._backend = backend
        self._user = user
        self._messages = messages
        self._deleted = deleted
        self._budget = budget
        self._max_message = min(max_message, budget)
        self._max_batch = max_batch
        # The next message to consider; every one before it was read ahead or passed over.
        self._cursor = 1
        # False until the first RETR: one message at a time.
        self._wide = False
        self._ready: dict[int, bytes] = {}
        self._pending: set[int] = set()
        # Octets reserved: the messages in _ready and _pending, by their listed sizes.
        self.held = 0
        # One task per store call on its way; batches are planned as soon as there is room,
        # not when the previous call has ended.
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()

    # -- what the session calls --------------------------------------------------------------

    def start(self, after: int, *, wide: bool) -> None:
        """The client listed the maildrop (``after`` 0) or retrieved message ``after``: read on
        from the message after it, the whole budget once ``wide``."""
        for n in [n for n in self._ready if n <= after]:
            self._ready.pop(n)
            self._release(n)
        if self._cursor <= after:
            # The client went past the window: what is on its way is of no use any more.
            self._stop()
            self._cursor = after + 1
        self._wide = self._wide or wide
        self._fill()

    async def take(self, number: int) -> bytes | None:
        """Message ``number``'s content if it was read ahead (waiting for it when it is on its
        way), else None."""
        while number in self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        data = self._ready.pop(number, None)
        if data is not None:
            self._release(number)  # refilled by the start() that follows the RETR
        return data

    def discard(self, number: int) -> None:
        """DELE: the message will not be retrieved (one on its way is dropped on arrival)."""
        if self._ready.pop(number, None) is not None:
            self._release(number)

    def drop(self) -> None:
        """Free everything (the client went idle); the next :meth:`start` begins again with
        one message, from the first one not yet taken."""
        first = min([*self._ready, *self._pending], default=self._cursor)
        self._stop()
        self._ready.clear()
        self.held = 0
        self._cursor = first
        self._wide = False

    @property
    def idle(self) -> bool:
        """Nothing held or on its way."""
        return self.held == 0 and not self._tasks

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.drop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- reading ahead -----------------------------------------------------------------------

    def _size(self, number: int) -> int:
        return self._messages[number - 1].size

    def _release(self, number: int) -> None:
        self.held -= self._size(number)

    def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for n in self._pending:
            self._release(n)
        self._pending.clear()
        self._arrived.set()

    def _plan(self) -> list[int]:
        """The next batch: messages from the cursor that fit in the budget (one at a time
        before the first RETR; none while more than half the budget is held, so that batches
        are large)."""
        if self._wide:
            if self.held > self._budget // 2:
                return []
            room, most = self._budget - self.held, self._max_batch
        else:
            if self.held:
                return []
            room, most = self._max_message, 1
        batch: list[int] = []
        n = self._cursor
        while n <= len(self._messages) and len(batch) < most:
            size = self._size(n)
            if self._deleted(n) or size > self._max_message or n in self._ready:
                n += 1  # RETR reads a large one itself
                continue
            if size > room:
                break
            batch.append(n)
            room -= size
            n += 1
        self._cursor = n
        return batch

    def _fill(self) -> None:
        batch = self._plan()
        if not batch:
            return
        self._pending.update(batch)
        self.held += sum(self._size(n) for n in batch)
        task = asyncio.create_task(self._read(batch), name="pop3-read-ahead")
        self._tasks.add(task)

    async def _read(self, batch: list[int]) -> None:
        me = asyncio.current_task()
        numbers = {self._messages[n - 1].uid: n for n in batch}
        total = sum(self._size(n) for n in batch)
        try:
            async with aclosing(self._backend.fetch_many(self._user, list(numbers), total)) as s:
                async for uid, data in s:
                    n = numbers.get(uid)
                    if n is None or n not in self._pending:
                        continue
                    self._pending.discard(n)
                    # Gone, marked deleted meanwhile, or not what the listing said: RETR reads
                    # it itself and answers for it.
                    if data is None or self._deleted(n) or len(data) != self._size(n):
                        self._release(n)
                    else:
                        self._ready[n] = data
                    self._arrived.set()
        except BackendUnavailable as e:
            log.info("read-ahead failed", extra=kv(messages=len(batch), error=str(e)))
        finally:
            # Unless stopped (_stop released the batch, and a new call may own the numbers
            # now): what did not come is not coming. The next start tries again from there.
            if me in self._tasks:
                self._tasks.discard(me)
                missed = [n for n in batch if n in self._pending]
                for n in missed:
                    self._pending.discard(n)
                    self._release(n)
                if missed:
                    self._cursor = min(self._cursor, missed[0])
                self._arrived.set()
