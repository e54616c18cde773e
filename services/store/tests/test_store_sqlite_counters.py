"""ADR 0046: each mailbox's counts (messages, \\Seen, \\Deleted, bytes) are kept by SQLite
triggers in the transaction of every change, and equal what summing the messages gives."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from postmesh.store.contract_suite import message
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.sqlite import SqliteStoreRepository
from postmesh.store.sqlite.schema import SCHEMA_VERSION

_DERIVED = (
    "SELECT b.name, COUNT(m.uid), COALESCE(SUM(m.seen), 0), COALESCE(SUM(m.deleted), 0),"
    " COALESCE(SUM(m.size), 0) FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id"
    " WHERE b.user = ? GROUP BY b.id ORDER BY b.name"
)
_KEPT = (
    "SELECT name, n_messages, n_seen, n_deleted, n_bytes FROM mailboxes WHERE user = ?"
    " ORDER BY name"
)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _check(repo: SqliteStoreRepository, user: str = "u") -> None:
    """The kept counters, what the store answers from them, and the messages agree."""
    derived, kept = await repo.connection.run(
        lambda c: (c.execute(_DERIVED, (user,)).fetchall(), c.execute(_KEPT, (user,)).fetchall())
    )
    assert kept == derived
    boxes = {b.name: b for b in await repo.list_mailboxes(user)}
    for name, n, seen, deleted, size in derived:
        b = boxes[name]
        assert (b.messages, b.unseen, b.deleted, b.size) == (n, n - seen, deleted, size)
    quota = await repo.get_quota(user)
    assert (quota.messages_used, quota.storage_used) == (
        sum(r[1] for r in derived),
        sum(r[4] for r in derived),
    )


async def test_counters_follow_every_kind_of_write(tmp_path: Path) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    for n in range(1, 7):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n, b"x" * n * 100)))
    await _check(repo)
    data = message(7)
    await repo.append("u", INBOX, ["\\Seen"], 0, len(data), _one(data))
    await repo.store_flags("u", INBOX, [1, 2, 3], FlagsMode.ADD, ["\\Seen"])
    await repo.store_flags("u", INBOX, [2], FlagsMode.REPLACE, ["\\Deleted", "$Junk"])
    await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Seen"])  # no change
    await _check(repo)
    await repo.create_mailbox("u", "Keep")
    await repo.copy_messages("u", INBOX, [1, 2, 4], "Keep")
    await repo.move_messages("u", INBOX, [5, 6], "Keep")
    await _check(repo)
    await repo.expunge("u", INBOX)
    await repo.store_flags("u", "Keep", [1, 2, 3], FlagsMode.ADD, ["\\Deleted"])
    await repo.expunge("u", "Keep", [2])
    await _check(repo)
    await repo.rename_mailbox("u", INBOX, "Old")  # INBOX's messages move to a new mailbox
    await repo.rename_mailbox("u", "Keep", "Kept")
    await _check(repo)
    await repo.delete_mailbox("u", "Kept")
    await _check(repo)
    await repo.close()


async def test_upgrade_counts_the_stored_mail_once(tmp_path: Path) -> None:
    """A version-5 file (no counters) gets them, counted from its messages, on open."""
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    for n in range(1, 5):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    await repo.store_flags("u", INBOX, [1, 2], FlagsMode.ADD, ["\\Seen"])
    await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Deleted"])
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:
        for trigger in ("messages_count_in", "messages_count_out", "messages_count_change"):
            conn.execute(f"DROP TRIGGER {trigger}")
        for column in ("n_messages", "n_seen", "n_deleted", "n_bytes"):
            conn.execute(f"ALTER TABLE mailboxes DROP COLUMN {column}")
        conn.execute("PRAGMA user_version=5")
    conn.close()

    repo = SqliteStoreRepository(path)
    await repo.open()
    box = await repo.get_mailbox("u", INBOX)
    assert (box.messages, box.unseen, box.deleted) == (4, 2, 1)
    await _check(repo)
    await repo.deliver(Delivery("q5", "u", "", content=message(5)))  # and kept from then on
    await _check(repo)
    await repo.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
