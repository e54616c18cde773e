"""Shared plumbing: run a fetch script, stop our own child process, read a log tail."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Self, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPTS_DIR = REPO_ROOT / "scripts" / "infra"

# How long the first download/build may take (Maven resolution, FerretDB's Go build).
FETCH_TIMEOUT_S = 1800.0


class InfraError(RuntimeError):
    """A test server could not be fetched or started."""


def run_fetch_script(script: str, *args: str) -> Path:
    """Run scripts/infra/<script> and return the path it prints as its last stdout line.

    Its stderr (progress of a first download/build, or the reason it failed) goes to ours, so
    it shows in CI logs and in pytest's captured output of a failing fixture.
    """
    path = SCRIPTS_DIR / script
    try:
        done = subprocess.run(
            ["bash", str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            timeout=FETCH_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{script} did not finish within {FETCH_TIMEOUT_S:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise InfraError(f"{script} failed (exit {done.returncode}); see its stderr above")
    return Path(lines[-1])


def tail_text(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return tail_text(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"(no log: {exc})"


# Processes we started and have not stopped yet: a last-resort cleanup when the interpreter
# exits without running the context managers' __exit__ (e.g. an unhandled KeyboardInterrupt).
_LIVE: set[subprocess.Popen[bytes]] = set()


def register(proc: subprocess.Popen[bytes]) -> None:
    _LIVE.add(proc)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM exactly this process, wait up to grace_s, then SIGKILL it."""
    _LIVE.discard(proc)
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        stop_process(proc, grace_s=5)


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A server as our child in a session of its own, its output in ``log_path``, registered
    for the last-resort cleanup."""
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    register(proc)
    return proc


def wait_ready(
    proc: subprocess.Popen[bytes],
    what: str,
    timeout_s: float,
    log: Path,
    probe: Callable[[], str | None],
    interval_s: float = 0.2,
) -> None:
    """Until ``probe()`` answers None (ready); otherwise it answers, or raises, why not yet.
    Raises with the last reason and the log's tail if ``proc`` exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            raise InfraError(
                f"{what} exited with code {code} during startup; log tail ({log}):\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise InfraError(
                f"{what} not ready within {timeout_s:g} s (last error: {last_error}); "
                f"log tail ({log}):\n{log_tail(log)}"
            )
        try:
            why = probe()
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            return
        last_error = why
        time.sleep(interval_s)


def wait_http_ok(
    proc: subprocess.Popen[bytes], url: str, what: str, timeout_s: float, log: Path
) -> None:
    """Until ``url`` answers 200."""

    def probe() -> str | None:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return None if resp.status == 200 else f"HTTP {resp.status}"

    wait_ready(proc, what, timeout_s, log, probe)


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


class LocalServer:
    """A server a test starts on loopback: ``start()`` returns it running, ``stop()`` ends it
    (idempotent). Used as ``with Server(...) as s:`` or ``async with`` (start/stop in a
    thread, as they block)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
