"""RETR read-ahead through a byte-budgeted window (ADR 38).

The maildrop is fixed once the session holds its lock (RFC 1939 §8) and downloaders RETR it in
order, waiting for each response before the next command. So from the first RETR on, the
message asked and those after it are read from the store ahead of their commands, many per
store call (GetMessageContents), instead of one store round trip per RETR.

Memory: the octets of the messages read ahead, whether received or still on their way, are
reserved against a limit *before* each store call, so a session never holds more than
``budget`` octets of read-ahead content; a batch is read as fast as the store sends it (gRPC
flow control is not the bound). The first RETR (or one that jumps) asks for as much as the
whole budget holds, in one call: the store then reads and sends one ramp of groups in one
stream, instead of a small first call and a second one competing with it for the store's
thread (ADR 0062; ADR 0052 started at an eighth of the budget). Nothing is read before the
first RETR (a mail check that only lists reads no content), and the session drops the window
when its client goes idle: no RETR for ``idle_seconds``.

Anything unusual is invisible to the client: a message that is gone, a failing store call, a
message over ``max_message`` or out of order is simply not in the window, and RETR then reads
it itself and reports what it finds (-ERR for an expunged message, [SYS/TEMP] for the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from contextlib import aclosing

from postmesh.common.backend import BackendUnavailable
from postmesh.common.logging import get_logger, kv
from postmesh.pop3_gw.backend import MailBackend, MessageInfo
from postmesh.pop3_gw.content import TERMINATOR, encode_whole

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
        idle_seconds: float,
    ) -> None:
        self._backend = backend
        self._user = user
        self._messages = messages
        self._deleted = deleted
        self._budget = budget
        self._max_message = min(max_message, budget)
        self._max_batch = max_batch
        # Until a RETR opens the window (and again after drop) nothing is read.
        self._open = False
        # The next message to consider; every one before it was read ahead or passed over.
        self._cursor = 1
        # Octets from message n to the last, at [n - 1]: at most what is left to read from n.
        self._rest = [*itertools.accumulate((m.size for m in reversed(messages)), initial=0)]
        self._rest.reverse()
        # Ready to send: each message already as RETR sends it (as stored when the store says
        # it is in wire form, ADR 42, else encode_whole), done while the client reads the
        # previous response rather than after its next command.
        self._ready: dict[int, list[bytes]] = {}
        self._pending: set[int] = set()
        # Octets reserved: the messages in _ready and _pending, by their listed sizes.
        self.held = 0
        # One task per store call on its way (one delivering at a time; the next is planned
        # when the last message of the previous one has arrived, not when its stream ends).
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()
        # Messages in the last call planned.
        self._batch_len = 0
        # The window is dropped when no RETR came for this long (one timer while it is open,
        # not one per command).
        self._idle_seconds = idle_seconds
        self._last_take = 0.0
        self._watch: asyncio.TimerHandle | None = None

    # -- what the session calls --------------------------------------------------------------

    async def take(self, number: int) -> list[bytes] | None:
        """RETR ``number``: its multi-line response body from the window, terminator included
        (waiting for it when it is on its way), or None when RETR must read it itself. A RETR ahead of the window (the first one, or a
        jump) opens it there; one behind it leaves it as it is."""
        loop = asyncio.get_running_loop()
        self._last_take = loop.time()
        if number not in self._ready and number not in self._pending:
            if self._open and number < self._cursor:
                return None  # behind the window, or it came back missing
            self._stop()
            self._drop_ready(len(self._messages))
            self._open, self._cursor = True, number
            if self._watch is None:
                self._watch = loop.call_later(self._idle_seconds, self._check_idle)
        self._fill()
        while number in self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        data = self._ready.pop(number, None)
        if data is not None:
            self._release(number)
        self._drop_ready(number)  # the client went past them
        self._fill()
        return data

    def discard(self, number: int) -> None:
        """DELE: the message will not be retrieved (one on its way is dropped on arrival)."""
        if self._ready.pop(number, None) is not None:
            self._release(number)

    def drop(self) -> None:
        """Free everything (the client went idle); the next RETR opens the window again."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._stop()
        self._drop_ready(len(self._messages))
        self._open = False

    def _check_idle(self) -> None:
        self._watch = None
        left = self._last_take + self._idle_seconds - asyncio.get_running_loop().time()
        if left > 0:
            self._watch = asyncio.get_running_loop().call_later(left, self._check_idle)
        else:
            self.drop()

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

    def _drop_ready(self, up_to: int) -> None:
        for n in [n for n in self._ready if n <= up_to]:
            del self._ready[n]
            self._release(n)

    def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        for n in self._pending:
            self._release(n)
        self._pending.clear()
        self._arrived.set()

    def _plan(self) -> list[int]:
        """The next batch: messages from the cursor that fit under the budget; none while the
        last call has more than half of its messages to deliver (calls would compete in the
        store for the messages wanted first) or more than half of the budget is held (so
        that batches are large). When all that is left would fit in one call once a little
        more of the window is taken, it waits for that, while a quarter of the budget is
        still held ahead of the client, rather than leave a last call of a few messages (ADR
        0052)."""
        if len(self._pending) > self._batch_len // 2 or self.held > self._budget // 2:
            return []
        room = self._budget - self.held
        left = self._rest[self._cursor - 1]
        if (
            room < left <= self._budget
            and self.held > self._budget // 4
            and len(self._messages) - self._cursor < self._max_batch
        ):
            return []
        batch: list[int] = []
        n = self._cursor
        while n <= len(self._messages) and len(batch) < self._max_batch:
            size = self._size(n)
            if (
                self._deleted(n)
                or size > self._max_message
                or n in self._ready
                or n in self._pending
            ):
                n += 1  # RETR reads a large one itself
                continue
            if size > room and batch:
                break
            if size > room and self.held:
                break
            # An empty window always takes the next message.
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
        self._batch_len = len(batch)
        self.held += sum(self._size(n) for n in batch)
        task = asyncio.create_task(self._read(batch), name="pop3-read-ahead")
        self._tasks.add(task)

    async def _read(self, batch: list[int]) -> None:
        me = asyncio.current_task()
        numbers = {self._messages[n - 1].uid: n for n in batch}
        total = sum(self._size(n) for n in batch)
        try:
            async with aclosing(self._backend.fetch_many(self._user, list(numbers), total)) as s:
                async for uid, data, wire_ready in s:
                    n = numbers.get(uid)
                    if n is None or n not in self._pending:
                        continue
                    self._pending.discard(n)
                    # Gone, marked deleted meanwhile, or not what the listing said: RETR reads
                    # it itself and answers for it.
                    if data is None or self._deleted(n) or len(data) != self._size(n):
                        self._release(n)
                    elif wire_ready:
                        # Stored in wire form (ADR 0042): nothing to stuff or repair.
                        self._ready[n] = [data, TERMINATOR]
                    else:
                        self._ready[n] = encode_whole(data)
                    self._arrived.set()
                    if len(self._pending) <= self._batch_len // 2:
                        # Half delivered: the next call's round trip overlaps the rest.
                        self._fill()
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
