"""Read-ahead of the next message during RETR: same bytes on the wire, errors still reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from conftest import Env

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def message(i: int) -> bytes:
    return f"Subject: m{i}\r\n\r\n.dot line {i}\r\nbody\n".encode() + b"x" * (i * 100) + b"\r\n"


async def test_retr_in_order_reads_ahead_and_sends_the_same_bytes(env: Env) -> None:
    for i in range(1, 5):
        await env.backend.add(message(i))

    def run() -> list[list[bytes]]:
        raw = env.raw_login()
        raw.cmd("UIDL")
        raw.multi()
        out = []
        for n in (1, 2, 4, 3):  # out of order once: the read-ahead is simply not used
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            out.append(raw.multi())
        raw.cmd("QUIT")
        raw.close()
        return out

    bodies = await in_thread(run)
    for n, lines in zip((1, 2, 4, 3), bodies, strict=True):
        assert lines[2] == f"..dot line {n}\r\n".encode()
        assert lines[3] == b"body\r\n"  # the bare LF normalised on both paths
        assert b"".join(lines).endswith(b"x" * (n * 100) + b"\r\n")
    fetched = [uid for name, uid in env.backend.calls if name == "fetch"]
    # Message 1 was read right after UIDL, 2 during RETR 1, 3 during RETR 2 (unused), ...
    assert fetched[:3] == [1, 2, 3]


async def test_read_ahead_skips_deleted_and_failures_still_answer_sys_temp(env: Env) -> None:
    for i in range(1, 4):
        await env.backend.add(message(i))

    def run() -> list[bytes]:
        raw = env.raw_login()
        env.backend.failing.add("fetch")
        raw.cmd("UIDL")
        raw.multi()  # reads message 1 ahead, which fails
        out = [raw.cmd("RETR 1")]
        env.backend.failing.discard("fetch")
        out += [raw.cmd("DELE 2"), raw.cmd("RETR 1")]
        raw.multi()
        env.backend.failing.add("fetch")  # message 3 was read during RETR 1 already
        out.append(raw.cmd("RETR 3"))
        raw.multi()
        raw.cmd("QUIT")
        raw.close()
        return out

    out = await in_thread(run)
    assert out[0] == b"-ERR [SYS/TEMP] Message temporarily unavailable, try later.\r\n"
    assert out[2].startswith(b"+OK") and out[3].startswith(b"+OK")
    # ahead of 1 (failed), RETR 1 streamed, ahead of 2 (before DELE 2), RETR 1 streamed again
    # (the read-ahead was for 2), then ahead of 3: deleted 2 is skipped.
    assert [uid for name, uid in env.backend.calls if name == "fetch"] == [1, 1, 2, 1, 3]


async def test_read_ahead_off(start_server: Callable, env: Env) -> None:  # type: ignore[type-arg]
    off = type(env)(env.backend, await start_server(pop3_read_ahead_max_octets=0))
    await env.backend.add(message(1))
    await env.backend.add(message(2))

    def run() -> None:
        raw = off.raw_login()
        raw.cmd("RETR 1")
        raw.multi()
        raw.cmd("QUIT")
        raw.close()

    await in_thread(run)
    assert [uid for name, uid in env.backend.calls if name == "fetch"] == [1]
