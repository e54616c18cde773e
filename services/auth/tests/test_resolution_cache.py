"""The recipient resolution cache (ADR 45): what it keeps, and when a kept answer stops being
used: a write through this replica at once, one through another replica (the change stamp)
within the check interval, any answer after its TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postmesh.auth.accounts import Accounts
from postmesh.auth.recipients import RecipientKind, Resolution
from postmesh.auth.records.sqlite import SqliteRecordRepository
from postmesh.auth.repository.sqlite import SqliteAccountRepository
from postmesh.auth.resolution_cache import ResolutionCache

LOCAL = RecipientKind.LOCAL_USER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """Counts resolutions; answers from a table the test changes."""

    def __init__(self) -> None:
        self.answers: dict[str, Resolution] = {}
        self.calls = 0
        self.stamp = "s1"
        self.stamp_reads = 0

    async def resolve(self, address: str) -> Resolution:
        self.calls += 1
        return self.answers.get(address, Resolution(RecipientKind.UNKNOWN_LOCAL))

    async def read_stamp(self) -> str:
        self.stamp_reads += 1
        return self.stamp


def _cache(backend: Backend, clock: Clock, ttl: float = 60.0) -> ResolutionCache:
    return ResolutionCache(backend.read_stamp, ttl, check_seconds=1.0, clock=clock)


async def test_local_answers_are_kept_unknown_and_remote_are_not() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock)
    backend.answers["a@x.test"] = Resolution(LOCAL, ("a@x.test",))
    backend.answers["far@y.test"] = Resolution(RecipientKind.REMOTE)
    for _ in range(3):
        assert await cache.resolve("a@x.test", backend.resolve) == Resolution(LOCAL, ("a@x.test",))
        await cache.resolve("far@y.test", backend.resolve)
        await cache.resolve("nobody@x.test", backend.resolve)
    # One read for the local user; the remote and unknown ones every time (a user or domain
    # created a moment later must receive mail at once).
    assert backend.calls == 1 + 3 + 3
    assert backend.stamp_reads == 1  # at most once per check interval


async def test_a_new_stamp_drops_what_was_kept_within_the_check_interval() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock)
    backend.answers["a@x.test"] = Resolution(LOCAL, ("a@x.test",))
    await cache.resolve("a@x.test", backend.resolve)
    backend.answers["a@x.test"] = Resolution(RecipientKind.DISABLED)
    backend.stamp = "s2"  # another replica's write
    clock.now += 0.5
    assert (await cache.resolve("a@x.test", backend.resolve)).kind is LOCAL  # not checked yet
    clock.now += 0.6
    assert (await cache.resolve("a@x.test", backend.resolve)).kind is RecipientKind.DISABLED


async def test_answers_expire_after_the_ttl_even_with_the_same_stamp() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock, ttl=5.0)
    backend.answers["a@x.test"] = Resolution(LOCAL, ("a@x.test",))
    await cache.resolve("a@x.test", backend.resolve)
    clock.now += 4.9
    await cache.resolve("a@x.test", backend.resolve)
    assert backend.calls == 1
    clock.now += 0.2
    await cache.resolve("a@x.test", backend.resolve)
    assert backend.calls == 2


async def test_an_answer_read_before_a_flush_is_not_kept_after_it() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock)
    backend.answers["a@x.test"] = Resolution(LOCAL, ("a@x.test",))
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(address: str) -> Resolution:
        started.set()
        await release.wait()
        return await backend.resolve(address)

    task = asyncio.create_task(cache.resolve("a@x.test", slow))
    await started.wait()
    cache.forget_all()  # a local write while the old answer was being read
    release.set()
    await task
    await cache.resolve("a@x.test", backend.resolve)
    assert backend.calls == 2


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Accounts, Accounts, Clock]]:
    """Two auth replicas on one database, with caches on, B's on a clock the test moves."""
    path = tmp_path / "auth.sqlite3"
    made: list[Accounts] = []
    for _ in range(2):
        repo, records = SqliteAccountRepository(path), SqliteRecordRepository(path)
        await repo.open()
        await records.open()
        made.append(Accounts(repo, records, resolution_cache_seconds=60.0))
    a, b = made
    clock = Clock()
    assert b.records is not None
    b.resolutions = ResolutionCache(b.records.change_stamp, 60.0, clock=clock)
    await a.create_domain("example.test")
    for name in ("bob", "carol"):
        await a.create_user(f"{name}@example.test", "pw1234")
    yield a, b, clock
    for acc in made:
        assert acc.records is not None
        await acc.records.close()
        await acc.repo.close()


async def test_a_write_through_this_replica_counts_at_once(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    a, _, _ = replicas
    assert (await a.resolve_recipient("bob@example.test")).kind is LOCAL
    await a.set_disabled("bob@example.test", True)
    assert (await a.resolve_recipient("bob@example.test")).kind is RecipientKind.DISABLED
    await a.set_disabled("bob@example.test", False)
    assert (await a.resolve_recipient("bob@example.test")).kind is LOCAL
    assert a.aliases is not None
    await a.aliases.create("bob+x@example.test", ["carol@example.test"])
    assert (await a.resolve_recipient("bob+x@example.test")).users == ("carol@example.test",)
    await a.delete_user("bob@example.test")
    assert (await a.resolve_recipient("bob@example.test")).kind is RecipientKind.UNKNOWN_LOCAL


async def test_another_replicas_writes_count_within_the_check_interval(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    a, b, clock = replicas
    assert a.aliases is not None
    assert (await b.resolve_recipient("bob@example.test")).users == ("bob@example.test",)

    await a.aliases.create("bob@example.test", ["carol@example.test"])  # takes precedence
    assert (await b.resolve_recipient("bob@example.test")).users == ("bob@example.test",)
    clock.now += 1.0
    assert (await b.resolve_recipient("bob@example.test")).users == ("carol@example.test",)

    await a.set_disabled("carol@example.test", True)
    clock.now += 1.0
    assert (await b.resolve_recipient("carol@example.test")).kind is RecipientKind.DISABLED
    # The alias now names only a disabled user: nothing receives it.
    assert (await b.resolve_recipient("bob@example.test")).kind is RecipientKind.UNKNOWN_LOCAL

    await a.set_disabled("carol@example.test", False)
    clock.now += 1.0
    assert (await b.resolve_recipient("carol@example.test")).kind is LOCAL
    await a.delete_user("carol@example.test")
    clock.now += 1.0
    assert (await b.resolve_recipient("carol@example.test")).kind is RecipientKind.UNKNOWN_LOCAL
