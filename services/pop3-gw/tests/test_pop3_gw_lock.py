"""RFC 1939 §8 exclusive maildrop access over real sockets, against the fake backend's locks."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Env, FakeBackend

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
IN_USE = b"-ERR [IN-USE] Maildrop already locked.\r\n"


async def eventually(probe: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def holder(backend: FakeBackend) -> str | None:
    held = backend.locks.get(USER)
    return held[0] if held else None


async def test_second_session_gets_in_use_and_stays_in_authorization(env: Env) -> None:
    def run() -> list[bytes]:
        first = env.raw_login()
        second = env.raw()
        out = [second.cmd(f"USER {USER}"), second.cmd(f"PASS {PASSWORD}")]
        out.append(second.cmd("STAT"))  # still AUTHORIZATION: not logged in
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        out.append(second.cmd(f"AUTH PLAIN {plain}"))
        out.append(first.cmd("QUIT"))
        # RFC 1939 §7: after -ERR the client may authenticate again on the same connection.
        out.append(second.cmd(f"USER {USER}"))
        out.append(second.cmd(f"PASS {PASSWORD}"))
        out.append(second.cmd("QUIT"))
        first.close()
        second.close()
        return out

    out = await asyncio.to_thread(run)
    assert out[0].startswith(b"+OK")
    assert out[1] == IN_USE
    assert out[2].startswith(b"-ERR")
    assert out[3] == IN_USE
    assert out[4].startswith(b"+OK")
    assert out[5].startswith(b"+OK") and out[6].startswith(b"+OK Logged in")
    assert out[7].startswith(b"+OK")
    assert holder(env.backend) is None


async def test_lock_is_released_before_the_quit_reply(env: Env) -> None:
    env.backend.add(b"Subject: a\r\n\r\nx\r\n")

    def run() -> tuple[bytes, bytes]:
        first = env.login()
        first.dele(1)
        bye = first.quit()
        # Straight after +OK: the maildrop is free for the next session.
        second = env.login()
        stat = second.stat()
        second.quit()
        return bye, f"{stat[0]} {stat[1]}".encode()

    bye, stat = await asyncio.to_thread(run)
    assert bye.startswith(b"+OK") and stat == b"0 0"
    acquires = [c for c in env.backend.calls if c[0] == "acquire_lock"]
    releases = [c for c in env.backend.calls if c[0] == "release_lock"]
    assert len(acquires) == 2 and len(releases) == 2
    # Each session locks with its own id, and releases that one.
    assert acquires[0][1][1] != acquires[1][1][1]
    assert [r[1][1] for r in releases] == [a[1][1] for a in acquires]


async def test_lock_is_released_when_the_connection_drops(env: Env) -> None:
    def login_and_drop() -> None:
        raw = env.raw_login()
        raw.close()  # no QUIT

    await asyncio.to_thread(login_and_drop)
    await eventually(lambda: holder(env.backend) is None)

    def again() -> bytes:
        pop = env.login()
        return pop.quit()

    assert (await asyncio.to_thread(again)).startswith(b"+OK")


async def test_lock_of_a_crashed_session_expires(env: Env) -> None:
    # A gateway died with a session open: its lock stays until the lease runs out.
    env.backend.locks[USER] = ("crashed-session", env.backend.now() + 60)

    def attempt() -> bytes:
        raw = env.raw()
        raw.cmd(f"USER {USER}")
        resp = raw.cmd(f"PASS {PASSWORD}")
        raw.cmd("QUIT")
        raw.close()
        return resp

    assert await asyncio.to_thread(attempt) == IN_USE
    env.backend.lock_offset += 61
    assert (await asyncio.to_thread(attempt)).startswith(b"+OK Logged in")


async def test_lock_is_renewed_while_the_session_lives(
    start_server: Callable[..., Any], backend: FakeBackend, env: Env
) -> None:
    env = dataclasses.replace(env, service=await start_server(pop3_maildrop_lock_seconds=3))
    raw = await asyncio.to_thread(env.raw_login)
    try:
        first_expiry = backend.locks[USER][1]
        await eventually(lambda: any(c[0] == "renew_lock" for c in backend.calls))
        assert backend.locks[USER][1] > first_expiry
        assert (await asyncio.to_thread(raw.cmd, "NOOP")).startswith(b"+OK")
    finally:
        raw.close()


async def test_session_that_lost_its_lock_ends_without_update(
    start_server: Callable[..., Any], backend: FakeBackend, env: Env
) -> None:
    backend.add(b"Subject: keep me\r\n\r\nx\r\n")
    backend.renew_granted = False  # another session took the maildrop after ours expired
    env = dataclasses.replace(env, service=await start_server(pop3_maildrop_lock_seconds=3))

    def run() -> tuple[bytes, bytes]:
        raw = env.raw_login()
        dele = raw.cmd("DELE 1")
        raw.sock.settimeout(10)
        closed = raw.line()  # the server hangs up at the first renewal (after ~1 s)
        raw.close()
        return dele, closed

    dele, closed = await asyncio.to_thread(run)
    assert dele.startswith(b"+OK") and closed == b""
    assert len(backend.inbox[USER]) == 1  # nothing deleted: no UPDATE


async def test_lock_failures_are_temporary(env: Env) -> None:
    env.backend.failing.add("acquire_lock")

    def attempt() -> bytes:
        raw = env.raw()
        raw.cmd(f"USER {USER}")
        resp = raw.cmd(f"PASS {PASSWORD}")
        raw.close()
        return resp

    assert (await asyncio.to_thread(attempt)).startswith(b"-ERR [SYS/TEMP]")
    env.backend.failing = {"open_maildrop"}
    assert (await asyncio.to_thread(attempt)).startswith(b"-ERR [SYS/TEMP]")
    # The lock taken before the maildrop could not be opened was given back.
    await eventually(lambda: holder(env.backend) is None)
    assert any(c[0] == "release_lock" for c in env.backend.calls)
