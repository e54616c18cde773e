"""SharedCalls: identical calls made while one runs share it; nothing is kept after."""

from __future__ import annotations

import asyncio

import pytest

from postmesh.common.shared_calls import SharedCalls


class Lookup:
    """Answers ``key * 2`` once released; counts the calls it was asked to make."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self, key: int) -> int:
        self.calls.append(key)
        await self.release.wait()
        if self.fail:
            raise RuntimeError(f"lookup of {key} failed")
        return key * 2


async def settle() -> None:
    """Let the callers and the calls they started run up to their first wait."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_concurrent_callers_of_one_key_share_one_call() -> None:
    lookup = Lookup()
    shared: SharedCalls[int, int] = SharedCalls(lookup)
    waiting = [asyncio.ensure_future(shared(k)) for k in (1, 1, 2, 1)]
    await settle()
    assert lookup.calls == [1, 2]
    assert shared.running == 2
    lookup.release.set()
    assert await asyncio.gather(*waiting) == [2, 2, 4, 2]
    assert shared.shared == 2
    assert shared.running == 0
    # Nothing kept: the next caller asks again.
    assert await shared(1) == 2
    assert lookup.calls == [1, 2, 1]


async def test_a_failure_reaches_every_caller_and_is_not_kept() -> None:
    lookup = Lookup()
    lookup.fail = True
    shared: SharedCalls[int, int] = SharedCalls(lookup)
    waiting = [asyncio.ensure_future(shared(7)) for _ in range(3)]
    await settle()
    lookup.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    lookup.fail = False
    assert await shared(7) == 14
    assert lookup.calls == [7, 7]


async def test_a_caller_going_away_does_not_cancel_the_others_call() -> None:
    lookup = Lookup()
    shared: SharedCalls[int, int] = SharedCalls(lookup)
    first = asyncio.ensure_future(shared(3))
    second = asyncio.ensure_future(shared(3))
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    lookup.release.set()
    assert await second == 6
    assert lookup.calls == [3]


async def test_share_runs_a_call_keyed_apart_from_its_arguments_and_reports_joiners() -> None:
    release = asyncio.Event()
    runs: list[str] = []
    joined: list[None] = []

    async def check(secret: str) -> bool:
        runs.append(secret)
        await release.wait()
        return secret == "right"

    shared: SharedCalls[bytes, bool] = SharedCalls(on_shared=lambda: joined.append(None))
    first = asyncio.create_task(shared.share(b"k1", lambda: check("right")))
    second = asyncio.create_task(shared.share(b"k1", lambda: check("not run")))
    other = asyncio.create_task(shared.share(b"k2", lambda: check("wrong")))
    await asyncio.sleep(0)
    release.set()
    assert await first is True and await second is True and await other is False
    assert runs == ["right", "wrong"]
    assert len(joined) == 1 and shared.shared == 1 and shared.running == 0


async def test_calling_without_a_call_is_a_type_error() -> None:
    shared: SharedCalls[int, int] = SharedCalls()
    with pytest.raises(TypeError):
        await shared(1)
