"""ADR 0041: flag changes commit without fsync, everything else with; a power cut that loses
the last flag changes can never make a MODSEQ handed out before be handed out again."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from sqlite_commits import commit_levels

from postmesh.common.sqlite import MAX_NON_DURABLE
from postmesh.store.contract_suite import message
from postmesh.store.model import INBOX, Delivery, FlagsMode
from postmesh.store.sqlite import SqliteStoreRepository
from postmesh.store.sqlite.repository import MODSEQ_ADVANCE_AT_OPEN


async def test_only_flag_changes_commit_without_fsync(tmp_path: Path) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    levels = await commit_levels(repo.connection)
    r = await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    assert levels == ["FULL"]
    await repo.store_flags("u", INBOX, [r.uid], FlagsMode.ADD, ["\\Seen"])
    await repo.store_flags("u", INBOX, [r.uid], FlagsMode.REPLACE, ["\\Flagged", "\\Deleted"])
    assert levels[1:] == ["NORMAL", "NORMAL"]
    await repo.create_mailbox("u", "Keep")
    await repo.copy_messages("u", INBOX, [r.uid], "Keep")
    await repo.move_messages("u", "Keep", [1], "Trash")
    await repo.expunge("u", INBOX)
    assert levels[3:] == ["FULL"] * 4
    # Back at FULL between transactions.
    assert await repo.connection.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
    await repo.close()


def _back_to(kept: Path, path: Path) -> None:
    """The store's files as the power cut left them: the snapshot in ``kept``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for f in kept.iterdir():
        shutil.copy(f, path.parent / f.name)


async def test_reopening_advances_modseq_past_flag_changes_a_power_cut_lost(
    tmp_path: Path,
) -> None:
    """The worst case of a power cut: every flag change since the last durable commit gone.
    The files as they were at that commit stand for what the disk kept."""
    path = tmp_path / "store.sqlite3"
    kept = tmp_path / "kept"
    kept.mkdir()
    repo = SqliteStoreRepository(path)
    await repo.open()
    for n in range(1, 4):
        await repo.deliver(Delivery(f"q{n}", "u", "", content=message(n)))
    durable = (await repo.get_mailbox("u", INBOX)).highestmodseq

    def snapshot(c: sqlite3.Connection) -> None:  # on the connection's thread: no write runs
        for suffix in ("", "-wal"):
            shutil.copy(f"{path}{suffix}", kept / f"store.sqlite3{suffix}")

    await repo.connection.run(snapshot)
    told: list[int] = []  # the MODSEQs clients heard of, all lost below
    for i in range(MAX_NON_DURABLE):
        res = await repo.store_flags(
            "u", INBOX, [1 + i % 3], FlagsMode.REMOVE if i // 3 % 2 else FlagsMode.ADD, ["\\Seen"]
        )
        told.append(res.messages[0].modseq)
    assert told == list(range(durable + 1, durable + MAX_NON_DURABLE + 1))
    await repo.close()

    _back_to(kept, path)
    repo = SqliteStoreRepository(path)
    await repo.open()
    box = await repo.get_mailbox("u", INBOX)
    assert box.highestmodseq == durable + MODSEQ_ADVANCE_AT_OPEN > max(told)
    # The lost changes are gone; nothing at or below the counter looks changed.
    changes = await repo.get_changes("u", INBOX, max(told))
    assert (changes.changed, changes.expunged, changes.highestmodseq) == ([], [], box.highestmodseq)
    # A client that heard of any lost MODSEQ and resynchronises with CHANGEDSINCE sees the
    # next change, whose MODSEQ is above all of them.
    res = await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Answered"])
    assert res.messages[0].modseq > max(told)
    for since in (durable, *told):
        changes = await repo.get_changes("u", INBOX, since)
        assert [m.uid for m in changes.changed] == [2]
    # Every open moves the counter again, whether anything was lost or not.
    await repo.close()
    repo = SqliteStoreRepository(path)
    await repo.open()
    again = await repo.get_mailbox("u", INBOX)
    assert again.highestmodseq == res.messages[0].modseq + MODSEQ_ADVANCE_AT_OPEN
    assert (await repo.get_changes("u", INBOX, res.messages[0].modseq)).changed == []
    await repo.close()
