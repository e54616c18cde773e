"""In-process locks per mailbox and per user.

Why, besides ordering UIDs: FerretDB 1.24 applies an update as read-then-write outside any
transaction, on its SQLite and PostgreSQL handlers alike, so concurrent $inc / findAndModify on
one document lose updates (measured: 50 concurrent $inc ended at 8 on SQLite, between 1 and 16
on PostgreSQL; ADR 37). Only unique-index inserts are atomic there. Serialising a mailbox's writes (and a user's mailbox-management operations, which
touch several mailboxes and the user's UIDVALIDITY counter) in the process makes the store
correct on FerretDB with one replica; on MongoDB the atomic single-document updates keep several
replicas correct as well.

Order: a user lock before any mailbox lock, several mailbox locks in sorted order, so two
operations never wait for each other in a cycle. The quota lock (``("quota", user)``,
``reservations.py``) is a leaf: taken last, and nothing is taken while it is held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


class KeyedLocks:
    """One asyncio lock per key, dropped when unused."""

    def __init__(self) -> None:
        self._locks: dict[Any, asyncio.Lock] = {}
        self._users: dict[Any, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    @contextlib.asynccontextmanager
    async def hold_all(self, keys: list[Any]) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys), key=str):
                await stack.enter_async_context(self.hold(key))
            yield


def user_key(user: str) -> tuple[str, str]:
    return ("user", user)
