"""SerialThread: calls run one at a time in the order handed over, on one thread, and each
caller hears its own outcome on its loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from postmesh.common.serial_thread import SerialThread


async def test_calls_run_in_order_on_one_thread_and_answer_their_callers() -> None:
    t = SerialThread("test")
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    results = await asyncio.gather(*(t.call(lambda i=i: job(i)) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test"}
    t.stop()


async def test_an_error_reaches_its_caller_and_the_thread_goes_on() -> None:
    t = SerialThread("test")

    def boom() -> None:
        raise ValueError("bad statement")

    def posted_boom() -> None:
        raise RuntimeError("a posted call failing is logged, not fatal")

    with pytest.raises(ValueError, match="bad statement"):
        await t.call(boom)
    t.post(posted_boom)
    assert await t.call(lambda: "still running") == "still running"
    t.stop()


async def test_a_caller_cancelled_before_its_turn_is_skipped() -> None:
    t = SerialThread("test")
    gate = threading.Event()
    ran: list[str] = []
    blocker = t.call(gate.wait)
    skipped = t.call(lambda: ran.append("skipped"))
    skipped.cancel()
    after = t.call(lambda: ran.append("after"))
    gate.set()
    await blocker
    await after
    assert ran == ["after"]
    t.stop()


async def test_a_caller_cancelled_during_its_call_lets_it_finish() -> None:
    t = SerialThread("test")
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> str:
        started.set()
        gate.wait()
        ran.append("finished")
        return "dropped"

    task = asyncio.ensure_future(t.call(slow))
    await asyncio.to_thread(started.wait)
    task.cancel()
    gate.set()
    assert await t.call(lambda: "next") == "next"
    assert ran == ["finished"] and task.cancelled()
    t.stop()


async def test_no_calls_after_stop() -> None:
    t = SerialThread("test")
    assert await t.call(lambda: 1) == 1
    t.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        t.call(lambda: 2)
    with pytest.raises(RuntimeError, match="stopped"):
        t.post(lambda: None)
