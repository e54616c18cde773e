"""Concurrent single-document writes into one collection, sent as one command.

Every Deliver inserts a handful of small documents (its delivery record, a blob reference, the
blob, its chunks, its parsed index), each an insert-if-absent. On FerretDB over PostgreSQL an
``insert`` command is one transaction, so 300 ``insert_one`` calls cost ~2.6 ms of CPU each
(FerretDB and PostgreSQL) where one ``insert_many`` of the same 300 costs ~0.2 ms each (ADR 45).
So the inserts of concurrent calls are queued per collection and sent together: while one batch
is in flight the next fills up, so a lone caller waits for nothing and a busy store sends few
commands (group commit, as ``postmesh.common.sqlite`` does for SQLite).

The same holds for the update that completes a blob (one per new blob, ``UpdateBatcher``),
sent as one ``update`` command of unordered statements.

Each document is still inserted on its own (``ordered=False``: one failing document fails
alone), and each caller learns its own outcome: inserted, already there (duplicate ``_id``,
error 11000, which every caller here treats as "someone inserted it first"), or its own error.

Reads are not batched this way: FerretDB 1.24 answers ``{_id: {$in: [...]}}`` by reading the
whole collection (``by_id.py``).

Update commands of several statements are bounded by :class:`UpdateSlots`: FerretDB 1.24 on
PostgreSQL keeps one connection of its pool (50 by default) per statement of an ``update``
command until the command ends, so one command of 50 statements, or two of 30 at once, waits
forever for a connection, and every other client of that FerretDB with it (ADR 63).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

Doc = dict[str, Any]

DUPLICATE_KEY = 11000
# Documents per command, and their payload: well below MongoDB's 48 MB message and 100,000
# statement limits, and short enough that one command never holds a transaction for long.
MAX_DOCUMENTS = 256
MAX_BYTES = 8 << 20
# Statements of multi-statement update commands in flight at once, per repository: well below
# FerretDB 1.24's pool of 50 PostgreSQL connections (see the module's docstring).
MAX_UPDATE_STATEMENTS = 32

T = TypeVar("T")  # what a caller queues
R = TypeVar("R")  # what it learns


class UpdateSlots:
    """At most MAX_UPDATE_STATEMENTS statements of update commands in flight at once: a
    command of ``n`` statements holds ``n`` slots while it runs (``n`` at most the limit)."""

    def __init__(self, limit: int = MAX_UPDATE_STATEMENTS) -> None:
        self.limit = limit
        self.free = limit
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, statements: int) -> AsyncIterator[None]:
        n = min(statements, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= n)
            self.free -= n
        try:
            yield
        finally:
            async with self._changed:
                self.free += n
                self._changed.notify_all()


class _Batcher(Generic[T, R]):
    """Queued items of concurrent callers, sent together by one task, each caller answered
    with its own outcome. Subclasses say how a batch is sent."""

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection
        self._queue: list[tuple[T, int, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def _submit(self, item: T, size: int) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # Retrieved here too: a caller cancelled meanwhile no longer awaits it.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((item, size, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        # A cancelled caller leaves its item queued (or in flight): the write may happen
        # anyway, as a cancelled single write could; every caller's write is idempotent.
        return await asyncio.shield(future)

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                try:
                    outcomes = await self._send([item for item, _, _ in batch])
                except asyncio.CancelledError:
                    for _, _, future in batch:
                        future.cancel()
                    raise
                except Exception as e:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._sender = None
            for _, _, future in self._queue:  # only left behind by a cancelled sender
                future.cancel()
            self._queue = []

    def _take(self) -> list[tuple[T, int, asyncio.Future[R]]]:
        """The oldest queued items, within :meth:`_max_items` and MAX_BYTES (at least one)."""
        total = 0
        n = 0
        limit = self._max_items()
        for _, size, _ in self._queue:
            if n and (n >= limit or total + size > MAX_BYTES):
                break
            total += size
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch

    def _max_items(self) -> int:
        return MAX_DOCUMENTS

    async def _send(self, items: list[T]) -> list[R | BaseException]:
        raise NotImplementedError


class InsertBatcher(_Batcher[Doc, bool]):
    """``insert(doc)`` for one collection; concurrent calls share one ``insert_many``."""

    async def insert(self, doc: Doc, size: int = 0) -> bool:
        """Insert ``doc``; True if this call inserted it, False if a document with its ``_id``
        exists. ``size``: the bytes the document carries beyond a few fields (chunk data), to
        bound a command's payload. Raises the document's own write error, or the command's."""
        return await self._submit(doc, size)

    async def _send(self, items: list[Doc]) -> list[bool | BaseException]:
        try:
            await self.collection.insert_many(items, ordered=False)
        except BulkWriteError as e:
            if e.details.get("writeConcernErrors"):
                raise
            outcomes: list[bool | BaseException] = [True] * len(items)
            for err in e.details.get("writeErrors", []):
                code = err.get("code")
                outcomes[int(err["index"])] = (
                    False
                    if code == DUPLICATE_KEY
                    else WriteError(str(err.get("errmsg", "")), code, err)
                )
            return outcomes
        return [True] * len(items)


class UpdateBatcher(_Batcher[tuple[Doc, Doc], bool]):
    """``update_one(filter, update)`` for one collection; concurrent calls share one
    ``update`` command (one statement each, unordered), within the repository's slots."""

    def __init__(self, collection: AsyncCollection[Doc], slots: UpdateSlots) -> None:
        super().__init__(collection)
        self.slots = slots

    def _max_items(self) -> int:
        return min(MAX_DOCUMENTS, self.slots.limit)

    async def update_one(self, filter: Doc, update: Doc) -> bool:
        """True if the update matched a document. False if it did not, or if another update
        of the same command did not (MongoDB reports one matched count per command, not per
        statement): a caller must treat False as "maybe not applied" and read to find out.
        Raises a statement's write error, or the command's."""
        return await self._submit((filter, update), 0)

    async def _send(self, items: list[tuple[Doc, Doc]]) -> list[bool | BaseException]:
        ops = [UpdateOne(f, u) for f, u in items]
        try:
            async with self.slots.hold(len(ops)):
                result = await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as e:
            if e.details.get("writeConcernErrors"):
                raise
            outcomes: list[bool | BaseException] = [False] * len(items)
            for err in e.details.get("writeErrors", []):
                outcomes[int(err["index"])] = WriteError(
                    str(err.get("errmsg", "")), err.get("code"), err
                )
            return outcomes
        every = result.matched_count == len(items)
        return [every] * len(items)
