"""IdleDeadline: asyncio.timeout's behaviour for connection reads, with one timer per
connection."""

from __future__ import annotations

import asyncio
import time

import pytest

from postmesh.common.idle import IdleDeadline


async def test_a_wait_that_finishes_in_time_returns_its_result() -> None:
    idle = IdleDeadline(5.0)
    assert await idle.wait(asyncio.sleep(0.01, result="line")) == "line"
    idle.close()


async def test_a_wait_longer_than_the_limit_raises_timeout_error() -> None:
    idle = IdleDeadline(0.05)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await idle.wait(asyncio.sleep(10))
    assert 0.04 <= time.monotonic() - started < 2
    # The task is usable afterwards: not left cancelled.
    assert await idle.wait(asyncio.sleep(0, result=1)) == 1
    idle.close()


async def test_the_limit_counts_from_each_wait_not_from_the_first() -> None:
    # Many short waits whose total far exceeds the limit: the timer armed by the first one
    # fires while another wait is on and re-arms itself for that wait's deadline.
    idle = IdleDeadline(0.1)
    for _ in range(8):
        await idle.wait(asyncio.sleep(0.03))
    with pytest.raises(TimeoutError):
        await idle.wait(asyncio.sleep(10))
    idle.close()


async def test_time_between_waits_does_not_count() -> None:
    idle = IdleDeadline(0.05)
    await idle.wait(asyncio.sleep(0))
    await asyncio.sleep(0.15)  # the timer fires with no wait on: nothing happens
    assert await idle.wait(asyncio.sleep(0.02, result="ok")) == "ok"
    idle.close()


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    idle = IdleDeadline(5.0)
    task = asyncio.create_task(idle.wait(asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    idle.close()


async def test_close_cancels_the_timer() -> None:
    idle = IdleDeadline(600.0)
    await idle.wait(asyncio.sleep(0))
    assert idle._timer is not None
    idle.close()
    assert idle._timer is None
