"""Auth records on SQLite (embedded default), in the account database file."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

from postmesh.auth.records.base import Alias, FailureCount, LoginState, RecordRepository
from postmesh.common.sasl.scram import ScramKeys
from postmesh.common.sqlite import SqliteConnection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scram_keys (
    address TEXT PRIMARY KEY, salt BLOB NOT NULL, iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL, server_key BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY, failures INTEGER NOT NULL, window_start REAL NOT NULL,
    locked_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS aliases (
    address TEXT PRIMARY KEY, domain TEXT NOT NULL, targets TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS aliases_domain ON aliases (domain);
CREATE TABLE IF NOT EXISTS catch_all (domain TEXT PRIMARY KEY, target TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS disabled_users (address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS change_stamps (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The change stamp of what recipients resolve to (RecordRepository.change_stamp).
_STAMP = "resolutions"
_TOUCH = (
    "INSERT INTO change_stamps VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


def _touch(c: sqlite3.Connection) -> None:
    c.execute(_TOUCH, (_STAMP, uuid.uuid4().hex))


def _setup(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


class SqliteRecordRepository(RecordRepository):
    def __init__(self, path: Path) -> None:
        self._db = SqliteConnection(path, _setup)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def get_scram(self, address: str) -> ScramKeys | None:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT salt, iterations, stored_key, server_key FROM scram_keys WHERE address = ?",
                (address,),
            ).fetchone()
        )
        return ScramKeys(bytes(row[0]), int(row[1]), bytes(row[2]), bytes(row[3])) if row else None

    async def set_scram(self, address: str, keys: ScramKeys | None) -> None:
        def q(c: sqlite3.Connection) -> None:
            if keys is None:
                c.execute("DELETE FROM scram_keys WHERE address = ?", (address,))
                return
            c.execute(
                "INSERT OR REPLACE INTO scram_keys VALUES (?, ?, ?, ?, ?)",
                (address, keys.salt, keys.iterations, keys.stored_key, keys.server_key),
            )

        await self._db.run(q)

    async def secret(self, name: str, candidate: bytes) -> bytes:
        def q(c: sqlite3.Connection) -> bytes:
            c.execute("INSERT OR IGNORE INTO secrets VALUES (?, ?)", (name, candidate))
            return bytes(
                c.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0]
            )

        return await self._db.transaction(q)

    async def add_failure(self, key: str, now: float, window: float) -> int:
        def q(c: sqlite3.Connection) -> int:
            # One statement: a window that expired restarts the count (keeping a running lock).
            row = c.execute(
                "INSERT INTO login_failures (key, failures, window_start) VALUES (?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                "  failures = CASE WHEN window_start < ? THEN 1 ELSE failures + 1 END,"
                "  window_start = CASE WHEN window_start < ? THEN ? ELSE window_start END"
                " RETURNING failures",
                (key, now, now - window, now - window, now),
            ).fetchone()
            return int(row[0])

        return await self._db.run(q)

    async def lock(self, key: str, until: float) -> None:
        await self._db.run(
            lambda c: c.execute(
                "UPDATE login_failures SET locked_until = MAX(locked_until, ?) WHERE key = ?",
                (until, key),
            )
        )

    async def get_failures(self, key: str) -> FailureCount | None:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT failures, locked_until FROM login_failures WHERE key = ?", (key,)
            ).fetchone()
        )
        return FailureCount(int(row[0]), float(row[1])) if row else None

    async def login_state(self, address: str, failure_keys: list[str]) -> LoginState:
        def q(c: sqlite3.Connection) -> LoginState:
            # One trip to the connection's thread instead of one per record (ADR 0057).
            failures: dict[str, FailureCount | None] = {}
            for key in failure_keys:
                row = c.execute(
                    "SELECT failures, locked_until FROM login_failures WHERE key = ?", (key,)
                ).fetchone()
                failures[key] = FailureCount(int(row[0]), float(row[1])) if row else None
            disabled = has_scram = False
            if address:
                disabled = (
                    c.execute(
                        "SELECT 1 FROM disabled_users WHERE address = ?", (address,)
                    ).fetchone()
                    is not None
                )
                has_scram = (
                    c.execute("SELECT 1 FROM scram_keys WHERE address = ?", (address,)).fetchone()
                    is not None
                )
            return LoginState(failures, disabled, has_scram)

        return await self._db.run(q)

    async def clear_failures(self, key: str) -> None:
        await self._db.run(lambda c: c.execute("DELETE FROM login_failures WHERE key = ?", (key,)))

    async def set_alias(self, address: str, targets: tuple[str, ...]) -> None:
        domain = address.rpartition("@")[2]

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)",
                (address, domain, json.dumps(list(targets))),
            )
            _touch(c)

        await self._db.transaction(q)

    async def get_alias(self, address: str) -> Alias | None:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT address, targets FROM aliases WHERE address = ?", (address,)
            ).fetchone()
        )
        return Alias(row[0], tuple(json.loads(row[1]))) if row else None

    async def delete_alias(self, address: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            deleted = bool(c.execute("DELETE FROM aliases WHERE address = ?", (address,)).rowcount)
            _touch(c)
            return deleted

        return await self._db.transaction(q)

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        def q(c: sqlite3.Connection) -> list[tuple[str, str]]:
            if domain is None:
                return c.execute("SELECT address, targets FROM aliases ORDER BY address").fetchall()
            return c.execute(
                "SELECT address, targets FROM aliases WHERE domain = ? ORDER BY address",
                (domain,),
            ).fetchall()

        return [Alias(a, tuple(json.loads(t))) for a, t in await self._db.run(q)]

    async def set_catch_all(self, domain: str, target: str | None) -> None:
        def q(c: sqlite3.Connection) -> None:
            if target is None:
                c.execute("DELETE FROM catch_all WHERE domain = ?", (domain,))
            else:
                c.execute("INSERT OR REPLACE INTO catch_all VALUES (?, ?)", (domain, target))
            _touch(c)

        await self._db.transaction(q)

    async def get_catch_all(self, domain: str) -> str | None:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT target FROM catch_all WHERE domain = ?", (domain,)
            ).fetchone()
        )
        return str(row[0]) if row else None

    async def set_disabled(self, address: str, disabled: bool) -> None:
        sql = (
            "INSERT OR IGNORE INTO disabled_users VALUES (?)"
            if disabled
            else "DELETE FROM disabled_users WHERE address = ?"
        )

        def q(c: sqlite3.Connection) -> None:
            c.execute(sql, (address,))
            _touch(c)

        await self._db.transaction(q)

    async def is_disabled(self, address: str) -> bool:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT 1 FROM disabled_users WHERE address = ?", (address,)
            ).fetchone()
        )
        return row is not None

    async def change_stamp(self) -> str:
        row = await self._db.run(
            lambda c: c.execute(
                "SELECT value FROM change_stamps WHERE name = ?", (_STAMP,)
            ).fetchone()
        )
        return str(row[0]) if row else ""
