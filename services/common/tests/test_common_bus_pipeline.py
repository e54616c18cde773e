"""Pipelined consumption (ADR 66): the commit tracker's contiguous prefix and the pipeline's
slots, commits, revocation and stop, with a handler whose records finish out of order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from postmesh.common.bus.base import BusRecord, CommitTracker, Pipeline


def rec(offset: int, part: str = "p") -> BusRecord:
    return BusRecord("t", f"{part}{offset}", b"", 0, offset)


def test_tracker_commits_only_the_contiguous_prefix() -> None:
    t: CommitTracker[str] = CommitTracker()
    for off in (1, 2, 5, 9):  # offsets need not be consecutive: fetch order counts
        t.add("p", off)
    assert not t.finish("p", 5) and not t.finish("p", 2)
    assert t.take() == {}  # 1 is not handled: nothing after it may be committed
    assert t.first_pending("p") == 1
    assert t.finish("p", 1)
    assert t.take() == {"p": 5} and t.take() == {}
    assert t.first_pending("p") == 9 and t.pending("p") == 1
    assert t.finish("p", 9) and t.take() == {"p": 9}
    assert t.first_pending("p") is None


def test_tracker_partitions_are_independent_and_restore_keeps_newer_points() -> None:
    t: CommitTracker[str] = CommitTracker()
    for off in (1, 2, 3):
        t.add("a", off)
        t.add("b", off)
    t.finish("a", 2)
    t.finish("b", 1)
    assert t.take() == {"b": 1}
    t.restore({"b": 1})  # the commit failed: it is taken again
    t.finish("b", 2)  # ...unless a later point was found meanwhile
    t.restore({"b": 1})
    assert t.take() == {"b": 2}
    t.drop(["a"])
    assert not t.finish("a", 1) and t.take() == {} and t.pending("a") == 0


def test_tracker_window_bounds_what_waits_behind_an_unfinished_record() -> None:
    t: CommitTracker[str] = CommitTracker(window=3)
    for off in (1, 2, 3):
        t.add("p", off)
    assert t.full("p") and not t.full("q")
    t.finish("p", 2)
    t.finish("p", 3)
    assert t.full("p")  # finished records behind 1 still count: a crash redoes them
    t.finish("p", 1)
    assert not t.full("p") and t.take() == {"p": 3}


class Commits:
    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []
        self.failing = False

    async def __call__(self, points: dict[str, int]) -> None:
        if self.failing:
            raise ConnectionError("bus down")
        self.calls.append(dict(points))

    def last(self, part: str) -> int | None:
        return next((c[part] for c in reversed(self.calls) if part in c), None)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 (polling test state)
            await asyncio.sleep(0.005)


def gated(
    gates: dict[int, asyncio.Event], done: list[int]
) -> Callable[[BusRecord], Awaitable[None]]:
    async def handler(r: BusRecord) -> None:
        if r.offset in gates:
            await gates[r.offset].wait()
        done.append(r.offset)

    return handler


async def test_records_start_as_slots_free_and_commit_their_prefix() -> None:
    """A slow record takes one slot; the others flow past it (not batch-synchronous) and its
    partition's commit point waits for it while another partition's moves on."""
    gates = {1: asyncio.Event()}
    done: list[int] = []
    commits = Commits()
    pipe: Pipeline[str] = Pipeline(
        gated(gates, done), asyncio.Event(), 2, commits, commit_interval=0.001
    )
    pipe.feed("p", [rec(1), rec(2), rec(3), rec(4)])
    assert pipe.in_flight == 2  # at most ``concurrency`` at once; the rest queued
    await until(lambda: done == [2, 3, 4])
    assert await asyncio.wait_for(pipe.hungry(), 1)  # a slot is free again: fetch
    pipe.feed("q", [rec(10, "q")])
    await until(lambda: commits.last("q") == 10)
    assert commits.last("p") is None  # 1 still runs: nothing of p may be committed
    gates[1].set()
    await until(lambda: commits.last("p") == 4)
    await pipe.close(cancel=False)


async def test_hungry_waits_while_every_slot_is_taken() -> None:
    gate = asyncio.Event()
    done: list[int] = []
    pipe: Pipeline[str] = Pipeline(gated({1: gate, 2: gate}, done), asyncio.Event(), 2, Commits())
    pipe.feed("p", [rec(1), rec(2)])
    waiting = asyncio.create_task(pipe.hungry())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # fetching stops while no slot is free
    gate.set()
    assert await asyncio.wait_for(waiting, 5)
    await pipe.close(cancel=False)


async def test_a_failing_record_holds_its_partition_until_it_succeeds() -> None:
    """Retried as before (never skipped); the records after it finish meanwhile, and the
    commit point moves past it only once it succeeded."""
    failures = 2
    done: list[int] = []
    commits = Commits()

    async def handler(r: BusRecord) -> None:
        nonlocal failures
        if r.offset == 2 and failures:
            failures -= 1
            raise RuntimeError("store down")
        done.append(r.offset)

    pipe: Pipeline[str] = Pipeline(handler, asyncio.Event(), 4, commits, commit_interval=0.001)
    pipe.feed("p", [rec(i) for i in range(1, 6)])
    await until(lambda: sorted(done) == [1, 3, 4, 5])
    await until(lambda: commits.last("p") == 1)
    await asyncio.sleep(0.1)
    assert commits.last("p") == 1
    await until(lambda: commits.last("p") == 5)  # after its retries (0.5 s, 1 s)
    assert sorted(done) == [1, 2, 3, 4, 5]
    await pipe.close(cancel=False)


async def test_a_failed_commit_is_retried() -> None:
    commits = Commits()
    commits.failing = True
    pipe: Pipeline[str] = Pipeline(
        gated({}, []), asyncio.Event(), 2, commits, commit_interval=0.001
    )
    pipe.feed("p", [rec(1)])
    await asyncio.sleep(0.1)
    assert commits.calls == []
    commits.failing = False
    await until(lambda: commits.last("p") == 1)  # after the 1 s back-off
    await pipe.close(cancel=False)


async def test_release_finishes_in_flight_commits_and_drops_the_rest() -> None:
    """A Kafka revocation: the partition's records not started are dropped, the in-flight
    ones finish and are committed, so the new owner does not redo them; another partition
    goes on."""
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    done: list[int] = []
    commits = Commits()
    pipe: Pipeline[str] = Pipeline(gated(gates, done), asyncio.Event(), 2, commits)
    pipe.feed("p", [rec(1), rec(2), rec(3)])
    releasing = asyncio.create_task(pipe.release(["p"]))
    await asyncio.sleep(0.05)
    assert not releasing.done()  # it waits for the in-flight records
    gates[1].set()
    gates[2].set()
    await asyncio.wait_for(releasing, 5)
    assert done == [1, 2]  # 3 was dropped: the new owner reads it
    assert commits.last("p") == 2
    assert pipe.tracker.pending("p") == 0
    pipe.feed("q", [rec(7, "q")])
    await until(lambda: commits.last("q") == 7)
    await pipe.close(cancel=False)


async def test_release_cancels_a_record_that_does_not_finish_in_time() -> None:
    gate = asyncio.Event()
    done: list[int] = []
    commits = Commits()
    pipe: Pipeline[str] = Pipeline(gated({2: gate}, done), asyncio.Event(), 4, commits)
    pipe.feed("p", [rec(1), rec(2), rec(3)])
    await until(lambda: sorted(done) == [1, 3])
    await pipe.release(["p"], wait=0.05)
    assert commits.last("p") == 1  # 2 was not handled: the new owner starts there
    assert pipe.in_flight == 0
    await pipe.close(cancel=False)


async def test_release_does_not_wait_on_a_commit_that_hangs() -> None:
    """A commit that does not return (the periodic one held by the broker during the
    rebalance) holds the revocation, and so the group's rebalance, for ``wait`` at most."""
    hang = asyncio.Event()
    calls: list[dict[str, int]] = []

    async def hanging(points: dict[str, int]) -> None:
        calls.append(dict(points))
        await hang.wait()

    done: list[int] = []
    pipe: Pipeline[str] = Pipeline(gated({}, done), asyncio.Event(), 4, hanging)
    pipe.feed("p", [rec(1), rec(2)])
    await until(lambda: sorted(done) == [1, 2])
    periodic = asyncio.create_task(pipe.commit())  # holds the commit lock, never returns
    await until(lambda: len(calls) == 1)
    await asyncio.wait_for(pipe.release(["p"], wait=0.05), 5)
    assert pipe.tracker.pending("p") == 0  # forgotten: the new owner reads from the broker
    periodic.cancel()
    hang.set()
    await pipe.close(cancel=True)


@pytest.mark.parametrize("cancel", [False, True])
async def test_close_commits_the_prefix(cancel: bool) -> None:
    """Stop (``stopping`` set): the records in hand finish and are committed; cancellation:
    they are cancelled and what finished before the first of them is committed."""
    gate = asyncio.Event()
    done: list[int] = []
    commits = Commits()
    stopping = asyncio.Event()
    pipe: Pipeline[str] = Pipeline(gated({3: gate}, done), stopping, 4, commits, commit_interval=60)
    pipe.feed("p", [rec(1), rec(2), rec(3), rec(4)])
    await until(lambda: sorted(done) == [1, 2, 4])
    assert commits.calls == []  # batched: the interval has not passed
    stopping.set()
    if not cancel:
        asyncio.get_running_loop().call_later(0.05, gate.set)
    await asyncio.wait_for(pipe.close(cancel=cancel), 5)
    assert commits.calls == [{"p": 2 if cancel else 4}]
    assert not await pipe.hungry()


async def test_commits_are_batched() -> None:
    done: list[int] = []
    commits = Commits()
    pipe: Pipeline[str] = Pipeline(gated({}, done), asyncio.Event(), 8, commits)
    for i in range(1, 41):
        pipe.feed("p", [rec(i)])
        await asyncio.sleep(0)
    await until(lambda: commits.last("p") == 40)
    assert len(commits.calls) < 10  # one per interval, not one per record
    await pipe.close(cancel=False)
