"""Auth's account and record repositories, SQLite and MongoDB (a real FerretDB 1.24), behind
recipient resolution: what aliases, catch-alls, disabled flags and deleted users need of each;
and the admin-token contract (postmesh.auth.repository.token_contract) on MongoDB."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from postmesh.auth.accounts import Accounts
from postmesh.auth.lockout import LockoutPolicy, LoginGuard
from postmesh.auth.recipients import RecipientKind, Resolution
from postmesh.auth.records import Alias, RecordRepository
from postmesh.auth.records.mongodb import MongoRecordRepository
from postmesh.auth.records.sqlite import SqliteRecordRepository
from postmesh.auth.repository.mongodb import MongoAccountRepository
from postmesh.auth.repository.sqlite import SqliteAccountRepository
from postmesh.auth.repository.token_contract import AdminTokenContract
from tests.integration.infra import FerretDB


@contextlib.asynccontextmanager
async def repositories(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, Any]]:
    """Open account and record repositories on ``backend``; a MongoDB database of their own,
    dropped after."""
    name = f"auth_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        repo: Any = SqliteAccountRepository(tmp_path / "auth.sqlite3")
        records: Any = SqliteRecordRepository(tmp_path / "auth.sqlite3")
        url = ""
    else:
        ferretdb: FerretDB = request.getfixturevalue("ferretdb")
        url = ferretdb.url
        repo = MongoAccountRepository(url, name)
        records = MongoRecordRepository(url, name)
    await repo.open()
    await records.open()
    try:
        yield repo, records
    finally:
        await records.close()
        await repo.close()
        if url:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
            await client.drop_database(name)
            await client.close()


@pytest.fixture(params=["sqlite", "mongodb"])
async def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Accounts]:
    async with repositories(request.param, tmp_path, request) as (repo, records):
        acc = Accounts(repo, records)
        await acc.create_domain("example.test")
        for user in ("ann", "ben"):
            await acc.create_user(f"{user}@example.test", "pw-contract")
        yield acc


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
async def test_login_reads_its_records_together(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """ADR 0057: a password login reads lockout counts, disabled state and SCRAM presence in
    one go (SQLite: one trip; MongoDB: the default, the calls side by side); both backends
    answer as the calls one by one, and lockout, disabling and clearing work through it."""
    async with repositories(backend, tmp_path, request) as (repo, records):
        policy = LockoutPolicy(account_failures=3, ip_failures=10, backoff_base_seconds=0)
        acc = Accounts(repo, records, LoginGuard(records, policy))
        await acc.create_domain("example.test")
        await acc.create_user("cal@example.test", "pw-contract")
        keys = ["user:cal@example.test", "ip:192.0.2.7"]
        assert (await acc.login("cal@example.test", "wrong", "pop3", "192.0.2.7")).user is None
        state = await records.login_state("cal@example.test", keys)
        assert state == await RecordRepository.login_state(records, "cal@example.test", keys)
        assert state.failures["user:cal@example.test"] is not None and state.has_scram
        assert not state.disabled
        ok = await acc.login("cal@example.test", "pw-contract", "pop3", "192.0.2.7")
        assert ok.user is not None, backend
        assert await records.get_failures("user:cal@example.test") is None  # cleared
        assert await records.get_failures("ip:192.0.2.7") is not None  # the IP's stays
        await acc.set_disabled("cal@example.test", True)
        assert (await records.login_state("cal@example.test", keys)).disabled
        assert (await acc.login("cal@example.test", "pw-contract")).user is None
        await acc.set_disabled("cal@example.test", False)
        for _ in range(3):
            await acc.login("cal@example.test", "wrong", "pop3", "192.0.2.8")
        locked = await acc.login("cal@example.test", "pw-contract", "pop3", "192.0.2.8")
        assert locked.user is None and locked.retry_after > 0, backend


async def test_aliases_round_trip_and_resolve(accounts: Accounts) -> None:
    records = accounts.records
    assert records is not None and accounts.aliases is not None
    await accounts.aliases.create("team@example.test", ["ann@example.test", "Far@remote.test"])
    await accounts.aliases.create("all@example.test", ["team@example.test", "ben@example.test"])
    assert await records.get_alias("team@example.test") == Alias(
        "team@example.test", ("ann@example.test", "Far@remote.test")
    )
    assert [a.address for a in await records.list_aliases("example.test")] == [
        "all@example.test",
        "team@example.test",
    ]
    assert await records.list_aliases("other.test") == []
    assert await accounts.resolve_recipient("ALL+x@example.test") == Resolution(
        RecipientKind.LOCAL_USER, ("ann@example.test", "ben@example.test"), ("Far@remote.test",)
    )
    assert await records.delete_alias("all@example.test")
    assert not await records.delete_alias("all@example.test")
    assert await records.get_alias("all@example.test") is None


async def test_catch_all_disabled_and_deleted(accounts: Accounts) -> None:
    records = accounts.records
    assert records is not None and accounts.aliases is not None
    await accounts.aliases.set_catch_all("example.test", "ben@example.test")
    assert await records.get_catch_all("example.test") == "ben@example.test"
    caught = await accounts.resolve_recipient("anyone@example.test")
    assert caught.catch_all and caught.users == ("ben@example.test",)

    await accounts.set_disabled("ann@example.test", True)
    await accounts.set_disabled("ann@example.test", True)  # idempotent
    assert await records.is_disabled("ann@example.test")
    assert (await accounts.resolve_recipient("ann@example.test")).kind is RecipientKind.DISABLED
    assert await accounts.authenticate("ann@example.test", "pw-contract") is None
    await accounts.set_disabled("ann@example.test", False)
    assert await accounts.authenticate("ann@example.test", "pw-contract") is not None

    await accounts.delete_user("ann@example.test")
    assert await accounts.repo.get_user("ann@example.test") is None
    assert not await accounts.repo.delete_user("ann@example.test")
    assert await records.get_scram("ann@example.test") is None
    # The catch-all now takes the deleted user's address, as any unknown local part.
    assert (await accounts.resolve_recipient("ann@example.test")).catch_all
    await records.set_catch_all("example.test", None)
    assert await records.get_catch_all("example.test") is None
    assert (await accounts.resolve_recipient("ann@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )


class TestMongoAdminTokensOnFerretDB(AdminTokenContract):
    @pytest.fixture
    async def repo(self, ferretdb: FerretDB) -> AsyncIterator[MongoAccountRepository]:
        name = f"auth_{uuid.uuid4().hex[:12]}"
        repo = MongoAccountRepository(ferretdb.url, name)
        await repo.open()
        yield repo
        await repo.close()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
        await client.drop_database(name)
        await client.close()


async def test_every_write_that_changes_a_resolution_replaces_the_change_stamp(
    accounts: Accounts,
) -> None:
    """What the resolution caches of other replicas watch (ADR 45)."""
    records = accounts.records
    assert records is not None
    seen = {await records.change_stamp()}
    writes = [
        records.set_alias("team@example.test", ("ann@example.test",)),
        records.set_alias("team@example.test", ("ben@example.test",)),
        records.delete_alias("team@example.test"),
        records.set_catch_all("example.test", "ann@example.test"),
        records.set_catch_all("example.test", None),
        records.set_disabled("ben@example.test", True),
        records.set_disabled("ben@example.test", False),
    ]
    for write in writes:
        await write
        stamp = await records.change_stamp()
        assert stamp not in seen
        seen.add(stamp)
    # Reads and other records leave it alone.
    await records.get_alias("team@example.test")
    await records.add_failure("user:ann@example.test", 1.0, 60.0)
    assert await records.change_stamp() == stamp
