"""Accounts on SQLite (embedded default)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from postmesh.auth.repository.base import (
    AccountRepository,
    AdminToken,
    AlreadyExists,
    DkimKey,
    Domain,
    NotFound,
    User,
)
from postmesh.common.sqlite import SqliteConnection

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS users (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL REFERENCES domains (name),
    password_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_domain ON users (domain);
CREATE TABLE IF NOT EXISTS dkim_keys (
    domain TEXT NOT NULL REFERENCES domains (name) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_key TEXT NOT NULL,
    created_at REAL NOT NULL,
    activates_at REAL NOT NULL,
    PRIMARY KEY (domain, selector)
);
CREATE TABLE IF NOT EXISTS admin_tokens (
    id TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL,
    role TEXT NOT NULL,
    domains TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL
);
"""
_TOKEN_COLUMNS = "id, token_digest, role, domains, label, created_at, expires_at"
_KEY_COLUMNS = "selector, algorithm, private_key, public_key, created_at, activates_at"


def _insert_key(c: sqlite3.Connection, domain: str, k: DkimKey) -> None:
    try:
        c.execute(
            f"INSERT INTO dkim_keys (domain, {_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                domain,
                k.selector,
                k.algorithm,
                k.private_key,
                k.public_key,
                k.created_at,
                k.activates_at,
            ),
        )
    except sqlite3.IntegrityError as e:
        raise AlreadyExists(f"dkim selector {k.selector} of {domain} exists") from e


def _token_of(r: sqlite3.Row | tuple[object, ...]) -> AdminToken:
    return AdminToken(
        str(r[0]), str(r[1]), str(r[2]), tuple(json.loads(str(r[3]))), str(r[4]),
        float(r[5]),  # type: ignore[arg-type]
        None if r[6] is None else float(r[6]),  # type: ignore[arg-type]
    )  # fmt: skip


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(_SCHEMA)


class SqliteAccountRepository(AccountRepository):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SqliteConnection(path, _setup)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(fn)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> bool:
        return await self._db.ping()

    async def add_domain(self, name: str, dkim_keys: Sequence[DkimKey] = ()) -> Domain:
        def add(c: sqlite3.Connection) -> None:
            try:
                c.execute("INSERT INTO domains (name) VALUES (?)", (name,))
            except sqlite3.IntegrityError as e:
                raise AlreadyExists(f"domain {name} exists") from e
            for k in dkim_keys:
                _insert_key(c, name, k)

        await self._db.transaction(add)
        return Domain(name)

    async def get_domain(self, name: str) -> Domain | None:
        row = await self._run(
            lambda c: c.execute("SELECT name FROM domains WHERE name = ?", (name,)).fetchone()
        )
        return Domain(row[0]) if row else None

    async def list_domains(self) -> list[Domain]:
        rows = await self._run(
            lambda c: c.execute("SELECT name FROM domains ORDER BY name").fetchall()
        )
        return [Domain(r[0]) for r in rows]

    async def add_user(self, address: str, password_hash: str) -> User:
        domain = address.rpartition("@")[2]

        def add(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
                raise NotFound(f"domain {domain} is not a local domain")
            try:
                c.execute(
                    "INSERT INTO users (address, domain, password_hash) VALUES (?, ?, ?)",
                    (address, domain, password_hash),
                )
            except sqlite3.IntegrityError as e:
                raise AlreadyExists(f"user {address} exists") from e

        await self._db.transaction(add)
        return User(address, password_hash)

    async def get_user(self, address: str) -> User | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT address, password_hash FROM users WHERE address = ?", (address,)
            ).fetchone()
        )
        return User(row[0], row[1]) if row else None

    async def delete_user(self, address: str) -> bool:
        cur = await self._run(
            lambda c: c.execute("DELETE FROM users WHERE address = ?", (address,))
        )
        return bool(cur.rowcount)

    async def list_users(self, domain: str | None = None) -> list[User]:
        def q(c: sqlite3.Connection) -> list[tuple[str, str]]:
            if domain is None:
                return c.execute(
                    "SELECT address, password_hash FROM users ORDER BY address"
                ).fetchall()
            return c.execute(
                "SELECT address, password_hash FROM users WHERE domain = ? ORDER BY address",
                (domain,),
            ).fetchall()

        return [User(a, h) for a, h in await self._run(q)]

    async def add_dkim_key(self, domain: str, key: DkimKey) -> None:
        def add(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
                raise NotFound(f"domain {domain} is not a local domain")
            _insert_key(c, domain, key)

        await self._db.transaction(add)

    async def list_dkim_keys(self, domain: str) -> list[DkimKey]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_KEY_COLUMNS} FROM dkim_keys WHERE domain = ?"
                " ORDER BY created_at, selector",
                (domain,),
            ).fetchall()
        )
        return [DkimKey(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    async def delete_dkim_key(self, domain: str, selector: str) -> bool:
        cur = await self._run(
            lambda c: c.execute(
                "DELETE FROM dkim_keys WHERE domain = ? AND selector = ?", (domain, selector)
            )
        )
        return bool(cur.rowcount)

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE users SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
        )

    async def add_admin_token(self, token: AdminToken) -> None:
        t = token

        def add(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    f"INSERT INTO admin_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (t.id, t.token_digest, t.role, json.dumps(list(t.domains)), t.label,
                     t.created_at, t.expires_at),
                )  # fmt: skip
            except sqlite3.IntegrityError as e:
                raise AlreadyExists(f"admin token {t.id} exists") from e

        await self._run(add)

    async def get_admin_token(self, token_id: str) -> AdminToken | None:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE id = ?", (token_id,)
            ).fetchone()
        )
        return _token_of(row) if row else None

    async def list_admin_tokens(self) -> list[AdminToken]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, id"
            ).fetchall()
        )
        return [_token_of(r) for r in rows]

    async def delete_admin_token(self, token_id: str) -> bool:
        cur = await self._run(
            lambda c: c.execute("DELETE FROM admin_tokens WHERE id = ?", (token_id,))
        )
        return bool(cur.rowcount)
