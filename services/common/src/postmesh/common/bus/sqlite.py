"""Embedded bus on one SQLite file, shared by the processes of ``make run`` on one host.

A single log table stands in for all topics; consumer groups keep their position in a table.
Readers poll (every 50 ms when idle), which is plenty for development and a small single host.
One consumer per group is assumed: embedded mode runs one replica of each service.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from postmesh.common.bus.base import CONSUMER_LAG, Bus, BusRecord, Handler, handle_batch
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


def _setup(conn: sqlite3.Connection) -> None:
    # The connection is synchronous=FULL (postmesh.common.sqlite): a record committed before
    # the SMTP 250 survives a power cut, as Kafka's acks=all would.
    conn.executescript(_SCHEMA)


class SqliteBus(Bus):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: SqliteConnection | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        conn = SqliteConnection(self.path, _setup)
        await conn.open()
        self._conn = conn

    async def stop(self) -> None:
        self._stopping.set()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        if self._conn is None:
            raise RuntimeError("SqliteBus.publish before start")
        # A transaction, so concurrent publishers share one commit (group commit).
        await self._conn.transaction(
            lambda c: c.execute(
                "INSERT INTO records (topic, key, value) VALUES (?, ?, ?)", (topic, key, value)
            )
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
        try:
            positions = await conn.run(
                lambda c: self._initial_positions(c, topics, group, from_latest)
            )
            lag_reported = 0.0
            while not self._stopping.is_set():
                got_any = False
                for topic in topics:
                    rows = await conn.run(
                        lambda c, t=topic: c.execute(  # type: ignore[misc]
                            "SELECT seq, key, value FROM records WHERE topic = ? AND seq > ? "
                            "ORDER BY seq LIMIT ?",
                            (t, positions[t], BATCH),
                        ).fetchall()
                    )
                    if not rows:
                        continue
                    got_any = True
                    recs = [BusRecord(topic, key, bytes(value), 0, seq) for seq, key, value in rows]
                    if not await handle_batch(handler, recs, self._stopping, concurrency):
                        return
                    last = recs[-1].offset
                    positions[topic] = last
                    if group is not None:
                        # On the publishing connection when there is one: the offset commit
                        # then shares a COMMIT with this process's publishes instead of
                        # waiting for their write lock.
                        await (self._conn or conn).transaction(
                            lambda c, t=topic, q=last: self._commit(c, group, t, q)  # type: ignore[misc]
                        )
                now = asyncio.get_running_loop().time()
                if now - lag_reported >= 1.0:
                    await self._report_lag(conn, topics, group, positions)
                    lag_reported = now
                if not got_any:
                    await asyncio.sleep(POLL_SECONDS)
        finally:
            await conn.close()

    @staticmethod
    async def _report_lag(
        conn: SqliteConnection, topics: Sequence[str], group: str | None, positions: dict[str, int]
    ) -> None:
        for t in topics:
            head = await conn.run(
                lambda c, t=t: c.execute(  # type: ignore[misc]
                    "SELECT COALESCE(MAX(seq), 0) FROM records WHERE topic = ?", (t,)
                ).fetchone()[0]
            )
            CONSUMER_LAG.labels(group or "", t, "0").set(max(0, int(head) - positions[t]))

    @staticmethod
    def _initial_positions(
        conn: sqlite3.Connection, topics: Sequence[str], group: str | None, from_latest: bool
    ) -> dict[str, int]:
        positions: dict[str, int] = {}
        for t in topics:
            row = None
            if group is not None:
                row = conn.execute(
                    "SELECT seq FROM group_offsets WHERE grp = ? AND topic = ?", (group, t)
                ).fetchone()
            if row is not None:
                positions[t] = int(row[0])
            elif from_latest:
                positions[t] = int(
                    conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
                )
            else:
                positions[t] = 0
        return positions

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
