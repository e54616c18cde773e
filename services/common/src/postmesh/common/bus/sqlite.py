"""Embedded bus on SQLite files, shared by the processes of ``make run`` on one host.

A log table stands in for the topics; consumer groups keep their position in a table of the
main file. Readers poll (every 50 ms when idle), which is plenty for development and a small
single host. One consumer per group is assumed: embedded mode runs one replica of each service.

A topic whose publish a client waits for (``postmesh.inbound``: the SMTP 250 waits for it) has
a file of its own beside the main one, ``<stem>.<topic><suffix>`` (ADR 43). SQLite has one
writer per file, and each commit holds the lock through its fsync: in one file the edge's
publish waited behind the store's mailbox events, delivery's events and its offset commits
(~0.5 ms a message on average, up to ~14 ms, measured), and SQLite's busy handler sleeps 1, 2,
5 ms... rather than waking when the lock is free. On first use the topic's records still in
the main file are copied over with their sequence numbers, so committed offsets stay valid.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

from postmesh.common import topics as known_topics
from postmesh.common.bus.base import (
    CONSUMER_LAG,
    Bus,
    BusRecord,
    Handler,
    Pipeline,
    handle_in_order,
)
from postmesh.common.sqlite import SqliteConnection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    created_ms INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);
CREATE INDEX IF NOT EXISTS records_topic_seq ON records (topic, seq);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (grp, topic)
);
"""

POLL_SECONDS = 0.05
BATCH = 100
# Topics with a file of their own (see the module docstring).
OWN_FILE_TOPICS = (known_topics.INBOUND,)
_MOVED_SCHEMA = "CREATE TABLE IF NOT EXISTS moved_from_main (topic TEXT PRIMARY KEY);"


def _setup(conn: sqlite3.Connection) -> None:
    # The connection is synchronous=FULL (postmesh.common.sqlite): a record committed before
    # the SMTP 250 survives a power cut, as Kafka's acks=all would. Hints (topics.HINTS) and
    # group positions commit without the fsync (ADR 50).
    conn.executescript(_SCHEMA)


def _setup_own_file(main: Path, topic: str, conn: sqlite3.Connection) -> None:
    """The topic's own file, with the topic's records of the main file copied in once (in
    one transaction, whichever process gets there first)."""
    conn.executescript(_SCHEMA + _MOVED_SCHEMA)
    if conn.execute("SELECT 1 FROM moved_from_main WHERE topic = ?", (topic,)).fetchone():
        return
    # ATTACH is not allowed inside a transaction; the main file exists (opened first).
    conn.execute("ATTACH DATABASE ? AS main_file", (str(main),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not conn.execute(
                "SELECT 1 FROM moved_from_main WHERE topic = ?", (topic,)
            ).fetchone():
                conn.execute(
                    "INSERT INTO records (seq, topic, key, value, created_ms) "
                    "SELECT seq, topic, key, value, created_ms FROM main_file.records "
                    "WHERE topic = ?",
                    (topic,),
                )
                conn.execute("INSERT INTO moved_from_main (topic) VALUES (?)", (topic,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE main_file")


class SqliteBus(Bus):
    def __init__(self, path: Path, own_file_topics: Collection[str] = ()) -> None:
        """``own_file_topics``: the topics kept in a file of their own. Every process using
        one bus must pass the same: :func:`postmesh.common.bus.create_bus` passes
        :data:`OWN_FILE_TOPICS`; the default, one file, is for tests that read it directly."""
        self.path = path
        self.own_file_topics = frozenset(own_file_topics)
        # The main file: other topics' records, and every group's offsets.
        self._conn: SqliteConnection | None = None
        # The publishing connections of topics with a file of their own, opened on first use.
        self._own: dict[str, SqliteConnection] = {}
        self._opening = asyncio.Lock()
        self._stopping = asyncio.Event()

    def topic_path(self, topic: str) -> Path:
        """The file holding ``topic``'s records."""
        if topic not in self.own_file_topics:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{topic}{self.path.suffix}")

    def _connection(self, topic: str) -> SqliteConnection:
        """A new (unopened) connection to the file of ``topic``."""
        if topic not in self.own_file_topics:
            return SqliteConnection(self.path, _setup)
        return SqliteConnection(
            self.topic_path(topic), functools.partial(_setup_own_file, self.path, topic)
        )

    async def start(self) -> None:
        conn = SqliteConnection(self.path, _setup)
        await conn.open()
        self._conn = conn

    async def stop(self) -> None:
        self._stopping.set()
        own, self._own = list(self._own.values()), {}
        for c in own:
            await c.close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _publisher(self, topic: str) -> SqliteConnection:
        if self._conn is None:
            raise RuntimeError("SqliteBus.publish before start")
        if topic not in self.own_file_topics:
            return self._conn
        conn = self._own.get(topic)
        if conn is None:
            async with self._opening:
                conn = self._own.get(topic)
                if conn is None:
                    conn = self._connection(topic)
                    await conn.open()
                    self._own[topic] = conn
        return conn

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        conn = await self._publisher(topic)
        # A transaction, so concurrent publishers share one commit (group commit). Hints and
        # traces without the fsync (ADR 50): a power cut may lose the last few, nothing else.
        await conn.transaction(
            lambda c: c.execute(
                "INSERT INTO records (topic, key, value) VALUES (?, ?, ?)", (topic, key, value)
            ),
            durable=topic not in known_topics.HINTS,
        )

    async def consume(
        self,
        topics: Sequence[str],
        group: str | None,
        handler: Handler,
        *,
        from_latest: bool = False,
        concurrency: int = 1,
    ) -> None:
        conn = SqliteConnection(self.path, _setup)
        await conn.open()
        # A reading connection per file: the main one, and each own-file topic's.
        readers = {t: conn for t in topics}
        try:
            for t in topics:
                if t in self.own_file_topics:
                    readers[t] = self._connection(t)
                    await readers[t].open()
            positions = await conn.run(lambda c: self._committed(c, topics, group))
            for t in topics:
                if t not in positions:
                    positions[t] = await readers[t].run(
                        lambda c, t=t: self._start_position(c, t, from_latest)  # type: ignore[misc]
                    )
            # Records up to here may have been handled before this consumer started (ADR 58).
            heads = {t: await readers[t].run(lambda c, t=t: self._head(c, t)) for t in topics}  # type: ignore[misc]
            if concurrency > 1:
                await self._pipelined(
                    conn, readers, topics, group, handler, concurrency, positions, heads
                )
            else:
                await self._in_order(conn, readers, topics, group, handler, positions, heads)
        finally:
            for reader in {id(r): r for r in readers.values()}.values():
                if reader.is_open:
                    await reader.close()
            if conn.is_open:
                await conn.close()

    async def _fetch(
        self, reader: SqliteConnection, topic: str, after: int, limit: int, head: int
    ) -> list[BusRecord]:
        rows = await reader.run(
            lambda c: c.execute(
                "SELECT seq, key, value FROM records WHERE topic = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (topic, after, limit),
            ).fetchall()
        )
        # Records up to ``head`` may have been handled before this consumer started (ADR 58).
        return [
            BusRecord(topic, key, bytes(value), 0, seq, maybe_seen=seq <= head)
            for seq, key, value in rows
        ]

    async def _commit_positions(
        self, conn: SqliteConnection, group: str, points: dict[str, int]
    ) -> None:
        # On the publishing connection when there is one: the offset commit then shares a
        # COMMIT with this process's publishes instead of waiting for their write lock.
        # Without the fsync (ADR 50): a position lost in a power cut redelivers records
        # already handled, which every consumer of a group tolerates (at-least-once;
        # delivery is idempotent).
        def write(c: sqlite3.Connection) -> None:
            for topic, seq in points.items():
                self._commit(c, group, topic, seq)

        publisher = self._conn
        # The bus's stop closes the publishing connection while the last commit may be due.
        await (publisher if publisher is not None and publisher.is_open else conn).transaction(
            write, durable=False
        )

    async def _in_order(
        self,
        conn: SqliteConnection,
        readers: dict[str, SqliteConnection],
        topics: Sequence[str],
        group: str | None,
        handler: Handler,
        positions: dict[str, int],
        heads: dict[str, int],
    ) -> None:
        """Ordered streams: a batch of each topic in order, committed after it."""
        lag_reported = 0.0
        while not self._stopping.is_set():
            got_any = False
            for topic in topics:
                recs = await self._fetch(
                    readers[topic], topic, positions[topic], BATCH, heads[topic]
                )
                if not recs:
                    continue
                got_any = True
                if not await handle_in_order(handler, recs, self._stopping):
                    return
                positions[topic] = recs[-1].offset
                if group is not None:
                    await self._commit_positions(conn, group, {topic: positions[topic]})
            now = asyncio.get_running_loop().time()
            if now - lag_reported >= 1.0:
                await self._report_lag(readers, topics, group, positions)
                lag_reported = now
            if not got_any:
                await asyncio.sleep(POLL_SECONDS)

    async def _pipelined(
        self,
        conn: SqliteConnection,
        readers: dict[str, SqliteConnection],
        topics: Sequence[str],
        group: str | None,
        handler: Handler,
        concurrency: int,
        positions: dict[str, int],
        heads: dict[str, int],
    ) -> None:
        """Independent records (ADR 66): fetched while slots are free and started at once;
        each topic committed up to its contiguous prefix of handled records. ``positions``
        is the fetch position here."""

        async def commit(points: dict[str, int]) -> None:
            if group is not None:
                await self._commit_positions(conn, group, points)

        pipe: Pipeline[str] = Pipeline(
            handler, self._stopping, concurrency, commit, window=self.pipeline_window
        )
        lag_reported = 0.0
        stopped = False
        try:
            while await pipe.hungry():
                got_any = False
                for topic in topics:
                    if pipe.full(topic):
                        continue  # a record keeps failing: wait for it (window bound)
                    recs = await self._fetch(
                        readers[topic], topic, positions[topic], BATCH, heads[topic]
                    )
                    if recs:
                        got_any = True
                        positions[topic] = recs[-1].offset
                        pipe.feed(topic, recs)
                now = asyncio.get_running_loop().time()
                if now - lag_reported >= 1.0:
                    handled = {}
                    for t in topics:
                        oldest = pipe.first_pending(t)
                        handled[t] = positions[t] if oldest is None else oldest - 1
                    await self._report_lag(readers, topics, group, handled)
                    lag_reported = now
                if not got_any:
                    await asyncio.sleep(POLL_SECONDS)
            stopped = True
        finally:
            # Cancelled or failed: the records in hand are cancelled, not awaited.
            await pipe.close(cancel=not stopped)

    @staticmethod
    async def _report_lag(
        readers: dict[str, SqliteConnection],
        topics: Sequence[str],
        group: str | None,
        positions: dict[str, int],
    ) -> None:
        for t in topics:
            head = await readers[t].run(
                lambda c, t=t: c.execute(  # type: ignore[misc]
                    "SELECT COALESCE(MAX(seq), 0) FROM records WHERE topic = ?", (t,)
                ).fetchone()[0]
            )
            CONSUMER_LAG.labels(group or "", t, "0").set(max(0, int(head) - positions[t]))

    @staticmethod
    def _committed(
        conn: sqlite3.Connection, topics: Sequence[str], group: str | None
    ) -> dict[str, int]:
        """The group's committed positions (main file), for the topics that have one."""
        positions: dict[str, int] = {}
        if group is None:
            return positions
        for t in topics:
            row = conn.execute(
                "SELECT seq FROM group_offsets WHERE grp = ? AND topic = ?", (group, t)
            ).fetchone()
            if row is not None:
                positions[t] = int(row[0])
        return positions

    @staticmethod
    def _start_position(conn: sqlite3.Connection, topic: str, from_latest: bool) -> int:
        """Without a committed position: the end of the topic's file, or its start."""
        if not from_latest:
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])

    @staticmethod
    def _head(conn: sqlite3.Connection, topic: str) -> int:
        return int(
            conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM records WHERE topic = ?", (topic,)
            ).fetchone()[0]
        )

    @staticmethod
    def _commit(conn: sqlite3.Connection, group: str, topic: str, seq: int) -> None:
        conn.execute(
            "INSERT INTO group_offsets (grp, topic, seq) VALUES (?, ?, ?) "
            "ON CONFLICT (grp, topic) DO UPDATE SET seq = excluded.seq",
            (group, topic, seq),
        )

    async def ready(self) -> bool:
        if self._conn is None:
            return False
        await self._conn.run(lambda c: c.execute("SELECT 1").fetchone())
        return True
