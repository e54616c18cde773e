"""RFC 1939 §8 exclusive maildrop access over real sockets, against the store's own maildrop
locks (MaildropLockService in-process; the store's clock is moved to expire leases)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Backend, Env

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
IN_USE = b"-ERR [IN-USE] Maildrop already locked.\r\n"


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def unlocked(backend: Backend) -> bool:
    return await backend.lock_holder() is None


async def called(backend: Backend, method: str) -> bool:
    return any(c[0] == method for c in backend.calls)


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
    assert await unlocked(env.backend)


async def test_lock_is_released_before_the_quit_reply(env: Env) -> None:
    await env.backend.add(b"Subject: a\r\n\r\nx\r\n")

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
    await eventually(lambda: unlocked(env.backend))

    def again() -> bytes:
        pop = env.login()
        return pop.quit()

    assert (await asyncio.to_thread(again)).startswith(b"+OK")


async def test_lock_of_a_crashed_session_expires(env: Env) -> None:
    # A gateway died with a session open: its lock stays until the lease runs out.
    locks = env.backend.store.app.queue.repo
    assert (await locks.acquire_lock(USER, "crashed-session", 60)).granted

    def attempt() -> bytes:
        raw = env.raw()
        raw.cmd(f"USER {USER}")
        resp = raw.cmd(f"PASS {PASSWORD}")
        raw.cmd("QUIT")
        raw.close()
        return resp

    assert await asyncio.to_thread(attempt) == IN_USE
    env.backend.store.clock_offset += 61
    assert (await asyncio.to_thread(attempt)).startswith(b"+OK Logged in")


async def test_lock_is_renewed_while_the_session_lives(
    start_server: Callable[..., Any], backend: Backend, env: Env
) -> None:
    env = dataclasses.replace(env, service=await start_server(pop3_maildrop_lock_seconds=3))
    raw = await asyncio.to_thread(env.raw_login)
    try:
        first = await backend.store.lock_holder(USER)
        assert first is not None
        await eventually(lambda: called(backend, "renew_lock"))

        async def extended() -> bool:
            # The renewal is logged as it is sent; its lease shows once the store answered.
            holder = await backend.store.lock_holder(USER)
            return holder is not None and holder[1] > first[1]

        await eventually(extended)
        renewed = await backend.store.lock_holder(USER)
        assert renewed is not None and renewed[0] == first[0]
        assert (await asyncio.to_thread(raw.cmd, "NOOP")).startswith(b"+OK")
    finally:
        raw.close()


async def test_session_that_lost_its_lock_ends_without_update(
    start_server: Callable[..., Any], backend: Backend, env: Env
) -> None:
    await backend.add(b"Subject: keep me\r\n\r\nx\r\n")
    env = dataclasses.replace(env, service=await start_server(pop3_maildrop_lock_seconds=3))
    raw = await asyncio.to_thread(env.raw_login)
    dele = await asyncio.to_thread(raw.cmd, "DELE 1")
    # Our lease runs out (the store's clock jumps) and another session takes the maildrop.
    locks = backend.store.app.queue.repo
    while True:
        backend.store.clock_offset += 10
        if (await locks.acquire_lock(USER, "other-session", 60)).granted:
            break
    raw.sock.settimeout(10)
    closed = await asyncio.to_thread(raw.line)  # the server hangs up at its next renewal
    raw.close()
    assert dele.startswith(b"+OK") and closed == b""
    assert len(await backend.inbox()) == 1  # nothing deleted: no UPDATE


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
    await eventually(lambda: unlocked(env.backend))
    assert await called(env.backend, "release_lock")
