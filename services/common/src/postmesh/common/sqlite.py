"""One SQLite connection for asyncio code: the embedded backends (bus, store, queue, auth).

Every call on a connection runs on that connection's own single worker thread, in order. A
caller cancelled mid-call (a gRPC deadline, shutdown) gets CancelledError while its statement
finishes in the thread; the next call queues behind it. So two transactions never interleave on
one connection, and close never races a running statement (which crashes the sqlite3 module);
an asyncio.Lock around asyncio.to_thread gives neither guarantee.

Group commit: transactions that callers start while the thread is busy are run together, each in
a SAVEPOINT of one BEGIN IMMEDIATE ... COMMIT, so N concurrent writers cost one write lock and
one fsync instead of N (the commit_delay idea of PostgreSQL, without any delay). Each caller's
work is still all or nothing (a failing one is rolled back to its savepoint alone), and no
caller hears of success before the COMMIT that made its work durable.

Non-durable transactions (``transaction(fn, durable=False)``, ADR 0041): a group made only of
them commits with ``synchronous=NORMAL``, without the fsync: in WAL mode a power cut may lose
the latest such commits (never a part of one, never an earlier commit while keeping a later
one), an application crash loses none. At most :data:`MAX_NON_DURABLE` of them in a row: the
group that would go beyond is committed durably, and a durable commit makes every earlier WAL
frame durable too, so a power cut loses at most the last ``MAX_NON_DURABLE`` transactions.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from postmesh.common.serial_thread import SerialThread, answer_all

T = TypeVar("T")

# At most this many transactions share one COMMIT (bounds how long one holds the write lock).
MAX_GROUP = 64

# At most this many acknowledged non-durable transactions since the last durable commit: what a
# power cut can lose (a user of durable=False sizes its recovery by it, e.g. the store's MODSEQ
# advance at open, ADR 0041).
MAX_NON_DURABLE = 256

# (work, its caller's future and that future's loop, durable)
_Pending = tuple[
    Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop, bool
]


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
        # Every statement of the connection runs on this one thread, in order.
        self._thread = SerialThread(f"sqlite {path.name}")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        # Non-durable transactions committed since the last durable commit, and whether the
        # connection may still be at synchronous=NORMAL (worker thread only).
        self._non_durable = 0
        self._relaxed = False

    async def open(self) -> None:
        def opened() -> sqlite3.Connection:
            conn = connect(self.path)
            if self._setup is not None:
                self._setup(conn)
            return conn

        self._conn = await self._thread.call(opened)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the worker thread (autocommit: one statement, one commit)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"SQLite database {self.path} used before open()")
        return await self._thread.call(functools.partial(fn, conn))

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """``fn`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises): all or nothing,
        committed (possibly together with other callers' transactions) before this returns.
        ``durable=False``: the commit may skip the fsync (module docstring); only for work
        whose loss in a power cut the caller can stand, bounded by MAX_NON_DURABLE."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"SQLite database {self.path} used before open()")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, fut, loop, durable))
            first = len(self._pending) == 1
        if first:
            # One drain per non-empty pending list: later callers join it until it starts.
            self._thread.post(functools.partial(self._drain, conn))
        # A caller cancelled before its turn is skipped (_drain); during it, its work is
        # committed or not with the group, and the outcome is dropped.
        return await fut

    def _drain(self, conn: sqlite3.Connection) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            if self._pending:
                try:
                    self._thread.post(functools.partial(self._drain, conn))
                except RuntimeError as e:  # closed meanwhile: nobody may wait forever
                    answer_all((loop, fut, None, e) for _, fut, loop, _ in self._pending)
                    self._pending = []
        # A read of each future's state from this thread: one cancelled just after is run and
        # its outcome dropped (settle), as for a caller cancelled during its turn.
        live = [p for p in batch if not p[1].cancelled()]
        if not live:
            return
        durable = any(p[3] for p in live) or self._non_durable + len(live) > MAX_NON_DURABLE
        committed = _commit_group(conn, live, durable=durable, relaxed=self._relaxed)
        if not durable:
            self._relaxed = True
        elif committed:
            self._relaxed = False
        if committed:
            self._non_durable = 0 if durable else self._non_durable + len(live)

    async def ping(self) -> bool:
        try:
            await self.run(lambda c: c.execute("SELECT 1").fetchone())
        except (sqlite3.Error, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Shielded: a cancelled stop still closes the file after the queued work.
            await asyncio.shield(self._thread.call(conn.close))
        self._thread.stop()


def _commit_group(
    conn: sqlite3.Connection, batch: list[_Pending], *, durable: bool, relaxed: bool
) -> bool:
    """Runs on the connection's thread: every transaction of ``batch`` in one COMMIT. True if
    the COMMIT succeeded. ``relaxed``: a non-durable group ran before, so a durable one sets
    FULL again first (in case setting it back after that group failed)."""
    outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
    try:
        # Set between transactions: SQLite applies it at the next COMMIT.
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        elif relaxed:
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        for pending in batch:
            conn.execute("SAVEPOINT grp")
            try:
                result = pending[0](conn)
            except BaseException as e:
                if not conn.in_transaction:
                    raise  # SQLite rolled everything back itself (disk full, I/O error)
                conn.execute("ROLLBACK TO grp")
                conn.execute("RELEASE grp")
                outcomes.append((pending, None, e))
            else:
                conn.execute("RELEASE grp")
                outcomes.append((pending, result, None))
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        if not durable:
            _back_to_full(conn)
        # Nothing of the group is durable: every caller hears of the failure.
        answer_all((loop, fut, None, e) for _, fut, loop, _ in batch)
        return False
    if not durable:
        _back_to_full(conn)
    answer_all((loop, fut, result, error) for (_, fut, loop, _), result, error in outcomes)
    return True


def _back_to_full(conn: sqlite3.Connection) -> None:
    """FULL again right after a non-durable group, so autocommit statements of run() are as
    durable as before. If this fails, the next durable group sets it before its BEGIN."""
    try:
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error:
        pass
