"""Exact quotas without transactions: a per-user check-and-reserve step and reservation documents
(ADR 0036).

Usage stays derived from the messages (a counter would drift without transactions). A writer
that adds messages under a limit first *reserves* what it adds, under the user's quota lock:

    used = sum(reservations of the user) + sum(live messages not bound to one of them)

and the write goes ahead only if ``used + added`` fits; the reservation document is inserted
before the lock is released. A message is *bound* to a reservation when its ``_id`` is the
reservation's id (Deliver: the delivery key; Append: its fresh id) or its ``qr`` field is (the
copies a COPY intent makes). So a write is counted exactly once at every moment -- by its
reservation until that is dropped after the message exists, by the message from then on --
whatever order the reads and the writer's steps interleave in: the reservations are read
first, and a message bound to one of them is left out of the sum whether it exists yet or not.

The quota lock is an in-process asyncio lock (concurrent calls in one store queue there) plus a
lease document whose unique ``_id`` is the user: inserting it is atomic on FerretDB 1.24 too
(ADR 7), so several store replicas on one MongoDB also check one at a time. A replica that dies
holding it blocks the user's limited writes for at most ``LOCK_LEASE_SECONDS``.

A writer that dies leaves its reservation, counted for at most ``RESERVATION_SECONDS``; a retried
Deliver (same delivery key) and a rolled-forward COPY reuse theirs, so a retry never counts
twice. Nothing here runs for a user without a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from postmesh.store import quota as q
from postmesh.store.errors import Unavailable
from postmesh.store.model import Quota
from postmesh.store.mongodb.locks import KeyedLocks

Doc = dict[str, Any]
# (user, ids whose messages are left out) -> (bytes, messages) of the user's live messages.
Usage = Callable[[str, list[str]], Awaitable[tuple[int, int]]]

# Longer than any write takes (a Deliver of the largest message on a loaded database; a COPY's
# intent lease is 120 s): a reservation that lapses while its writer still runs stops counting.
RESERVATION_SECONDS = 600.0
# The quota lock is held for a few reads and one insert.
LOCK_LEASE_SECONDS = 30.0
# How long a check waits for another replica's before answering UNAVAILABLE (retryable).
LOCK_WAIT_SECONDS = 15.0
POLL_SECONDS = (0.002, 0.05)  # first and longest pause between tries of a held lease

# The field binding a COPY's message to the intent that made it (and its reservation).
BOUND = "qr"


def bound_filter(ids: list[str]) -> Doc:
    """Messages not bound to any of ``ids`` (empty: every message)."""
    return {"_id": {"$nin": ids}, BOUND: {"$nin": ids}} if ids else {}


class QuotaGate:
    def __init__(
        self,
        reservations: AsyncCollection[Doc],
        leases: AsyncCollection[Doc],
        locks: KeyedLocks,
        usage: Usage,
    ) -> None:
        self.reservations = reservations
        self.leases = leases
        self._locks = locks
        self._usage = usage

    async def create_indexes(self) -> None:
        await self.reservations.create_index([("user", ASCENDING)])

    async def used(self, user: str) -> tuple[int, int]:
        """Bytes and messages in use or reserved (unlocked: for an early, advisory check)."""
        live = await self._live(user)
        return await self._used(user, live)

    async def reserve(
        self, user: str, rid: str, add_bytes: int, add_messages: int, storage: int, messages: int
    ) -> None:
        """Reserve what a write adds, or raise QuotaExceeded; an existing reservation ``rid``
        (an earlier attempt of the same write) is kept and counted once."""
        async with self._hold(user):
            live = await self._live(user)
            now = time.time()
            if any(r["_id"] == rid for r in live):
                await self.reservations.update_one(
                    {"_id": rid}, {"$set": {"expires_at": now + RESERVATION_SECONDS}}
                )
                return
            used_bytes, used_messages = await self._used(user, live)
            q.check(Quota(used_bytes, storage, used_messages, messages), add_bytes, add_messages)
            doc: Doc = {
                "_id": rid, "user": user, "bytes": add_bytes, "messages": add_messages,
                "created_at": now, "expires_at": now + RESERVATION_SECONDS,
            }  # fmt: skip
            try:
                await self.reservations.insert_one(doc)
            except DuplicateKeyError:
                # A lapsed one of the same id (the reads above skip those): renewed in place.
                await self.reservations.replace_one({"_id": rid}, doc)

    async def drop(self, rid: str) -> None:
        """Once the write's messages exist (they count from then on), or it made none."""
        await self.reservations.delete_one({"_id": rid})

    async def collect(self, now: float, limit: int) -> int:
        """For the janitor: reservations and leases past their life, of users whose next
        limited write (which removes its own) may never come."""
        lapsed = await (
            self.reservations.find({"expires_at": {"$lt": now}}, {"_id": 1})
            .limit(limit)
            .to_list(None)
        )
        if lapsed:
            await self.reservations.delete_many(
                {"_id": {"$in": [d["_id"] for d in lapsed]}, "expires_at": {"$lt": now}}
            )
        stale = await self.leases.find({"until": {"$lt": now}}).limit(limit).to_list(None)
        for lease in stale:  # by owner: a lease taken meanwhile stays
            await self.leases.delete_one({"_id": lease["_id"], "owner": lease["owner"]})
        return len(lapsed) + len(stale)

    async def _live(self, user: str) -> list[Doc]:
        docs = await self.reservations.find({"user": user}).to_list(None)
        now = time.time()
        if lapsed := [d["_id"] for d in docs if d["expires_at"] < now]:
            # Writers that died: their messages (if any) count as messages from now on.
            await self.reservations.delete_many(
                {"_id": {"$in": lapsed}, "expires_at": {"$lt": now}}
            )
        return [d for d in docs if d["expires_at"] >= now]

    async def _used(self, user: str, live: list[Doc]) -> tuple[int, int]:
        # The reservations are read before the messages: a message bound to one of them is
        # left out of the sum whether or not it was written in between.
        size, count = await self._usage(user, [str(r["_id"]) for r in live])
        return (
            size + sum(int(r["bytes"]) for r in live),
            count + sum(int(r["messages"]) for r in live),
        )

    @contextlib.asynccontextmanager
    async def _hold(self, user: str) -> AsyncIterator[None]:
        """The user's quota lock: in this process, then across replicas. A leaf lock: taken
        last, while the caller may hold its user or mailbox locks, and nothing is taken under
        it."""
        async with self._locks.hold(("quota", user)):
            owner = await self._take_lease(user)
            try:
                yield
            finally:
                await self.leases.delete_one({"_id": user, "owner": owner})

    async def _take_lease(self, user: str) -> str:
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = POLL_SECONDS[0]
        while True:
            now = time.time()
            try:
                await self.leases.insert_one(
                    {"_id": user, "owner": owner, "until": now + LOCK_LEASE_SECONDS}
                )
                return owner
            except DuplicateKeyError:
                pass
            except asyncio.CancelledError:
                # The caller went away (a gRPC deadline): the insert may have landed, and
                # nobody would release it for LOCK_LEASE_SECONDS.
                await asyncio.shield(self.leases.delete_one({"_id": user, "owner": owner}))
                raise
            held = await self.leases.find_one({"_id": user})
            if held is not None and held["until"] < now:
                # Its holder died: removed by its owner token, so a lease taken meanwhile by
                # another replica stays.
                await self.leases.delete_one({"_id": user, "owner": held["owner"]})
                continue
            if time.monotonic() > deadline:
                raise Unavailable(f"the quota of {user} is being checked elsewhere; retry")
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_SECONDS[1])
