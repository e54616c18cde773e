"""One SQLite connection for asyncio code: the embedded backends (bus, store, queue, auth).

Every call on a connection runs on that connection's own single worker thread, in order. A
caller cancelled mid-call (a gRPC deadline, shutdown) gets CancelledError while its statement
finishes in the thread; the next call queues behind it. So two transactions never interleave on
one connection, and close never races a running statement (which crashes the sqlite3 module);
an asyncio.Lock around asyncio.to_thread gives neither guarantee.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Autocommit connection in WAL mode; ``synchronous=FULL``: a commit acknowledged to a
    client survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class SqliteConnection:
    def __init__(
        self, path: Path, setup: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """``setup`` runs once on the new connection (schema, migrations, pragmas)."""
        self.path = path
        self._setup = setup
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        def opened() -> sqlite3.Connection:
            conn = connect(self.path)
            if self._setup is not None:
                self._setup(conn)
            return conn

        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, opened)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the worker thread (autocommit: one statement, one commit)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"SQLite database {self.path} used before open()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, conn)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises): all or nothing."""

        def txn(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.run(txn)

    async def ping(self) -> bool:
        try:
            await self.run(lambda c: c.execute("SELECT 1").fetchone())
        except (sqlite3.Error, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            # Shielded: a cancelled stop still closes the file after the queued work.
            await asyncio.shield(loop.run_in_executor(self._executor, conn.close))
        self._executor.shutdown(wait=False)
