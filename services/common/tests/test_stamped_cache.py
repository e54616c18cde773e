"""StampedCache: values kept until a local flush, a moved change stamp or their age, and only
those the caller says may be kept."""

from __future__ import annotations

import asyncio

from postmesh.common.stamped_cache import StampedCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    def __init__(self) -> None:
        self.values: dict[str, int] = {"a": 1, "b": -1}
        self.stamp = "s1"
        self.loads: list[str] = []
        self.stamp_reads = 0

    async def load(self, key: str) -> int:
        self.loads.append(key)
        await asyncio.sleep(0)
        return self.values[key]

    async def read_stamp(self) -> str:
        self.stamp_reads += 1
        return self.stamp


def _positive(v: int) -> bool:
    return v > 0


def _cache(backend: Backend, clock: Clock, **kw: float) -> StampedCache[str, int]:
    return StampedCache(backend.read_stamp, kw.pop("ttl", 60.0), clock=clock, **kw)  # type: ignore[arg-type]


async def test_kept_values_are_answered_without_a_load_and_others_always_load() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock)
    assert await cache.get("a", backend.load, _positive) == (1, False)
    assert await cache.get("a", backend.load, _positive) == (1, True)
    # Not kept (the caller's rule): read every time.
    assert await cache.get("b", backend.load, _positive) == (-1, False)
    assert await cache.get("b", backend.load, _positive) == (-1, False)
    assert backend.loads == ["a", "b", "b"]


async def test_a_moved_stamp_is_seen_within_check_seconds_and_drops_every_value() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock, check_seconds=1.0)
    await cache.get("a", backend.load, _positive)
    backend.values["a"] = 2
    backend.stamp = "s2"  # another replica wrote, then replaced the stamp
    clock.now += 0.5
    assert await cache.get("a", backend.load, _positive) == (1, True)  # not checked yet
    clock.now += 0.6
    assert await cache.get("a", backend.load, _positive) == (2, False)
    assert backend.stamp_reads == 2


async def test_age_bounds_a_value_when_no_stamp_moved() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock, ttl=10.0)
    await cache.get("a", backend.load, _positive)
    backend.values["a"] = 3  # a write whose stamp was lost
    clock.now += 9.0
    assert (await cache.get("a", backend.load, _positive))[0] == 1
    clock.now += 1.5
    assert await cache.get("a", backend.load, _positive) == (3, False)


async def test_a_local_flush_during_a_load_keeps_nothing_read_before_it() -> None:
    backend, clock = Backend(), Clock()
    cache = _cache(backend, clock)
    await cache.get("b", backend.load, _positive)  # the stamp is read once
    pending = asyncio.create_task(cache.get("a", backend.load, _positive))
    await asyncio.sleep(0)  # the load is under way
    cache.forget_all()  # a write through this process
    assert await pending == (1, False)
    assert await cache.get("a", backend.load, _positive) == (1, False)  # loaded again


async def test_the_oldest_value_goes_past_max_entries() -> None:
    backend, clock = Backend(), Clock()
    backend.values.update({"c": 3, "d": 4})
    cache = _cache(backend, clock, max_entries=2)
    for key in ("a", "c", "d"):
        await cache.get(key, backend.load, _positive)
    backend.loads.clear()
    for key in ("c", "d", "a"):
        await cache.get(key, backend.load, _positive)
    assert backend.loads == ["a"]
