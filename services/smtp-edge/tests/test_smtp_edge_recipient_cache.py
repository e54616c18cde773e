"""RCPT look-ups kept for a few seconds (ADR 43): only "a local user", from when it was
asked, one call for concurrent askers, errors and other answers never kept."""

from __future__ import annotations

import asyncio

import pytest

from postmesh.common.backend import BackendUnavailable
from postmesh.smtp_edge.backend import RecipientKind
from postmesh.smtp_edge.recipient_cache import CachedRecipients

from .conftest import FakeBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_local_users_are_kept_for_the_ttl_from_the_question() -> None:
    backend, clock = FakeBackend(), Clock()
    cache = CachedRecipients(backend, ttl=10.0, clock=clock)
    assert await cache.resolve_recipient("alice@example.org") is RecipientKind.LOCAL_USER
    clock.now += 9.9
    assert await cache.resolve_recipient("alice@example.org") is RecipientKind.LOCAL_USER
    assert backend.resolved == ["alice@example.org"]
    clock.now += 0.1  # 10 s after the question: asked again
    assert await cache.resolve_recipient("alice@example.org") is RecipientKind.LOCAL_USER
    assert backend.resolved == ["alice@example.org"] * 2


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("nobody@example.org", RecipientKind.UNKNOWN_LOCAL),
        ("someone@remote.example", RecipientKind.REMOTE),
    ],
)
async def test_other_answers_are_asked_every_time(address: str, kind: RecipientKind) -> None:
    backend = FakeBackend()
    cache = CachedRecipients(backend, ttl=10.0, clock=Clock())
    assert await cache.resolve_recipient(address) is kind
    assert await cache.resolve_recipient(address) is kind
    assert backend.resolved == [address, address]


async def test_a_user_removed_is_seen_once_the_entry_expires() -> None:
    class Changing(FakeBackend):
        kind = RecipientKind.LOCAL_USER

        async def resolve_recipient(self, address: str) -> RecipientKind:
            self.resolved.append(address)
            return self.kind

    backend, clock = Changing(), Clock()
    cache = CachedRecipients(backend, ttl=5.0, clock=clock)
    assert await cache.resolve_recipient("u@example.org") is RecipientKind.LOCAL_USER
    backend.kind = RecipientKind.DISABLED
    assert await cache.resolve_recipient("u@example.org") is RecipientKind.LOCAL_USER
    clock.now += 5.0
    assert await cache.resolve_recipient("u@example.org") is RecipientKind.DISABLED
    assert await cache.resolve_recipient("u@example.org") is RecipientKind.DISABLED
    assert len(backend.resolved) == 3


async def test_failures_reach_every_caller_and_are_not_kept() -> None:
    backend = FakeBackend(auth_down=True)
    cache = CachedRecipients(backend, ttl=10.0, clock=Clock())
    with pytest.raises(BackendUnavailable):
        await cache.resolve_recipient("alice@example.org")
    backend.auth_down = False
    assert await cache.resolve_recipient("alice@example.org") is RecipientKind.LOCAL_USER


async def test_concurrent_questions_share_one_call_and_survive_a_cancelled_caller() -> None:
    release = asyncio.Event()

    class Slow(FakeBackend):
        async def resolve_recipient(self, address: str) -> RecipientKind:
            self.resolved.append(address)
            await release.wait()
            return RecipientKind.LOCAL_USER

    backend = Slow()
    cache = CachedRecipients(backend, ttl=10.0, clock=Clock())
    callers = [asyncio.ensure_future(cache.resolve_recipient("a@example.org")) for _ in range(5)]
    await asyncio.sleep(0)
    callers[0].cancel()  # a session that went away
    release.set()
    answers = await asyncio.gather(*callers[1:])
    assert answers == [RecipientKind.LOCAL_USER] * 4
    assert backend.resolved == ["a@example.org"]


async def test_at_most_max_entries_are_kept_oldest_out() -> None:
    backend = FakeBackend()
    cache = CachedRecipients(backend, ttl=10.0, max_entries=2, clock=Clock())
    for address in ("alice@example.org", "bob@example.org", "sales@example.org"):
        await cache.resolve_recipient(address)
    backend.resolved.clear()
    await cache.resolve_recipient("bob@example.org")
    await cache.resolve_recipient("sales@example.org")
    await cache.resolve_recipient("alice@example.org")  # the oldest went
    assert backend.resolved == ["alice@example.org"]


async def test_zero_ttl_keeps_nothing() -> None:
    backend = FakeBackend()
    cache = CachedRecipients(backend, ttl=0.0, clock=Clock())
    await cache.resolve_recipient("alice@example.org")
    await cache.resolve_recipient("alice@example.org")
    assert backend.resolved == ["alice@example.org"] * 2
