"""One worker thread that runs the calls handed to it in order and answers each on the event loop
of the task that handed it over.

What ``postmesh.common.sqlite`` needs of a thread: a connection's statements never interleave,
and a hop costs little, since every call of the embedded store, bus, queue and auth makes one
to three. ``loop.run_in_executor`` on a one-worker ThreadPoolExecutor cost ~65 µs of CPU a hop
on the team's machine (its idle semaphore is a Python Condition taken on every submit, and the
answer travels through two chained futures); a ``queue.SimpleQueue`` and one
``call_soon_threadsafe`` cost ~36 µs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from postmesh.common.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# (call, the future awaiting it or None, that future's loop or None)
_Job = tuple[Callable[[], Any], "asyncio.Future[Any] | None", "asyncio.AbstractEventLoop | None"]


def settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the future's loop: its outcome, unless its caller gave up meanwhile (cancelled)."""
    if fut.done():
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)


def answer(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[Any],
    result: Any = None,
    error: BaseException | None = None,
) -> None:
    """From the worker thread: ``fut``'s outcome, handed to its loop (gone quietly if the loop
    was closed: nobody is left to hear it)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, fut, result, error)


# (the future's loop, the future, its result, its error)
Outcome = tuple["asyncio.AbstractEventLoop", "asyncio.Future[Any]", Any, "BaseException | None"]


def answer_all(outcomes: Iterable[Outcome]) -> None:
    """From the worker thread: many futures' outcomes (a committed group's), handed to each
    loop in one ``call_soon_threadsafe``: every hand-off writes the loop's wake-up socket, a
    system call and a wake-up each, which a group of n transactions paid n times."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
    for loop, fut, result, error in outcomes:
        by_loop.setdefault(loop, []).append((fut, result, error))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_all, settled)


def _settle_all(settled: list[tuple[Any, Any, BaseException | None]]) -> None:
    for fut, result, error in settled:
        settle(fut, result, error)


class SerialThread:
    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn()`` on the thread after everything handed over before; a future of its
        outcome. A caller cancelled before its turn is skipped; one cancelled during it leaves
        it to finish (its outcome is dropped)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._put((fn, fut, loop))
        return fut

    def post(self, fn: Callable[[], None]) -> None:
        """``fn()`` on the thread, nobody awaiting it (it answers its callers itself)."""
        self._put((fn, None, None))

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self._name}: thread stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._jobs.put(job)

    def stop(self) -> None:
        """No new calls; the thread ends after those already handed over."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._thread is not None:
                self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut, loop = job
            if fut is None or loop is None:
                try:
                    fn()
                except BaseException:  # it answers its callers itself; the thread goes on
                    log.exception("call on %s failed", self._name)
                continue
            if fut.cancelled():  # a read of its state; settle() ignores a late answer anyway
                continue
            try:
                result = fn()
            except BaseException as e:  # handed to the caller, as run_in_executor does
                answer(loop, fut, error=e)
            else:
                answer(loop, fut, result)
