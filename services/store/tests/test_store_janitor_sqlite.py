"""The janitor on SQLite: the file itself shrinks back (incremental auto-vacuum), the periodic
task runs and reports its metrics (also inside the real service), and a version-3 file is
upgraded."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path

from prometheus_client import REGISTRY

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.grpc import channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.store import leftovers as lo
from postmesh.store.app import StoreApp
from postmesh.store.contract_suite import message
from postmesh.store.contract_suite.janitor import POLICY, expunge_all
from postmesh.store.janitor import Janitor
from postmesh.store.model import INBOX, Delivery
from postmesh.store.settings import StoreSettings
from postmesh.store.sqlite import SqliteStoreRepository

DAY = 24 * 3600


def pages(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(count), int(free)
    finally:
        conn.close()


async def test_the_file_shrinks_back_after_fill_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    try:
        await repo.provision_user("u")
        await repo._db.run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        baseline, _ = pages(path)
        n = 60
        for i in range(n):
            body = bytes([i % 256]) * 200_000
            await repo.deliver(Delivery(f"q{i}", "u", "", content=message(i, body)))
        await repo._db.run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        full, _ = pages(path)
        assert full > baseline + n * 200_000 // 4096
        await expunge_all(repo, "u", INBOX)
        removed = await Janitor([repo], POLICY).run_pass(time.time() + 60 * DAY)
        assert removed[lo.TOMBSTONES] == n and removed[lo.DELIVERIES] == n
        assert removed[lo.PAGES] > n * 200_000 // 4096
        await repo._db.run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        after, free = pages(path)
        assert free == 0
        # Back to the empty store's size, give or take a few index pages.
        assert after <= baseline + 8, (baseline, full, after)
        assert (await repo.census())["blobs"] == 0
    finally:
        await repo.close()


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_the_periodic_task_runs_and_reports(tmp_path: Path) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    # Tombstones kept 0 s: the next pass after the expunge removes them.
    policy = dataclasses.replace(POLICY, interval_seconds=0.05, tombstone_retention_seconds=0)
    janitor = Janitor([repo], policy)
    removed_before = sample("postmesh_store_janitor_removed_total", {"kind": lo.TOMBSTONES})
    try:
        await repo.deliver(Delivery("q1", "u", "", content=message(1)))
        await expunge_all(repo, "u", INBOX)
        started = time.time()
        janitor.start()
        # Until a pass that started after the expunge has ended: the tombstone can be gone
        # while that pass is still collecting other kinds, before it reports its success.
        for _ in range(200):
            last = sample("postmesh_store_janitor_last_success_timestamp_seconds")
            if (await repo.census())["tombstones"] == 0 and last >= started:
                break
            await asyncio.sleep(0.05)
        assert (await repo.census())["tombstones"] == 0
        removed = sample("postmesh_store_janitor_removed_total", {"kind": lo.TOMBSTONES})
        assert removed - removed_before == 1
        assert sample("postmesh_store_janitor_last_success_timestamp_seconds") >= started
        assert sample("postmesh_store_janitor_pass_seconds_count") >= 1
    finally:
        await janitor.stop()
        await repo.close()


async def test_version_3_tombstones_start_their_retention_at_the_upgrade(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite3"
    repo = SqliteStoreRepository(path)
    await repo.open()
    await repo.deliver(Delivery("q1", "u", "", content=message(1)))
    await expunge_all(repo, "u", INBOX)
    await repo.close()
    conn = sqlite3.connect(path)
    with conn:  # as version 3 left it
        conn.execute("DROP INDEX expunged_age")
        conn.execute("ALTER TABLE expunged DROP COLUMN expunged_at")
        conn.execute("ALTER TABLE mailboxes DROP COLUMN vanished_floor")
        conn.execute("PRAGMA user_version=3")
    conn.close()
    upgraded = time.time()
    repo = SqliteStoreRepository(path)
    await repo.open()
    try:
        janitor = Janitor([repo], POLICY)
        assert (await janitor.run_pass(upgraded + 29 * DAY))[lo.TOMBSTONES] == 0
        assert (await repo.get_changes("u", INBOX, 0)).expunged == [1]
        assert (await janitor.run_pass(upgraded + 31 * DAY))[lo.TOMBSTONES] == 1
        assert (await repo.get_changes("u", INBOX, 0)).expunged_incomplete
    finally:
        await repo.close()


async def test_the_store_app_runs_the_janitor(tmp_path: Path) -> None:
    """The real service with a short interval: tombstones kept 1 s disappear on their own, and
    GetChanges over gRPC then says its expunged UIDs are incomplete."""
    settings = StoreSettings(
        data_dir=tmp_path, store_listen="127.0.0.1:0", bus="sqlite", grpc_plaintext=True,
        store_janitor_interval_seconds=0.1, store_tombstone_retention_seconds=1,
    )  # fmt: skip
    app = StoreApp(settings)
    await app.start()
    ch = channel(f"127.0.0.1:{app.port}", GrpcSecurity(), "store")
    try:
        stub = store_pb2_grpc.StoreServiceStub(ch)
        for n in (1, 2):
            req = store_pb2.DeliverRequest(queue_id=f"Q{n}", user="u", content=message(n))
            await stub.Deliver(req, timeout=10)
        await stub.StoreFlags(
            store_pb2.StoreFlagsRequest(
                user="u", mailbox="INBOX", uids=[1], flags=["\\Deleted"],
                mode=store_pb2.FLAGS_MODE_ADD,
            ),
            timeout=10,
        )  # fmt: skip
        await stub.Expunge(store_pb2.ExpungeRequest(user="u", mailbox="INBOX"), timeout=10)
        ask = store_pb2.GetChangesRequest(user="u", mailbox="INBOX", since_modseq=1)
        first = await stub.GetChanges(ask, timeout=10)
        assert list(first.expunged_uids) == [1] and not first.expunged_incomplete
        for _ in range(100):
            changes = await stub.GetChanges(ask, timeout=10)
            if changes.expunged_incomplete:
                break
            await asyncio.sleep(0.1)
        assert changes.expunged_incomplete and list(changes.expunged_uids) == []
        assert [m.uid for m in changes.changed] == [2]
    finally:
        await ch.close()
        await app.stop()
