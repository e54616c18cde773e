"""RETR read-ahead through the byte-budgeted window (ADR 38), over real sockets against the real
store in-process: same bytes on the wire, batches within the budget, errors still reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from postmesh.pop3_gw import window
from postmesh.pop3_gw.content import encode_whole
from postmesh.store.sqlite import SqliteStoreRepository

if TYPE_CHECKING:
    from conftest import Env

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def message(i: int) -> bytes:
    return f"Subject: m{i}\r\n\r\n.dot line {i}\r\nbody\n".encode() + b"x" * (i * 100) + b"\r\n"


def calls(env: Env, *names: str) -> list[tuple[str, Any]]:
    return [(name, arg) for name, arg in env.backend.calls if name in names]


async def fill(env: Env, count: int) -> list[int]:
    return [await env.backend.add(message(i)) for i in range(1, count + 1)]


def check_body(n: int, lines: list[bytes]) -> None:
    assert lines[0] == f"Subject: m{n}\r\n".encode()
    assert lines[2] == f"..dot line {n}\r\n".encode()  # byte-stuffed (RFC 1939 §3)
    assert lines[3] == b"body\r\n"  # the bare LF normalised
    assert lines[4] == b"x" * (n * 100) + b"\r\n"
    assert len(lines) == 5


async def test_retr_in_order_reads_ahead_in_one_batch(env: Env) -> None:
    uids = await fill(env, 6)

    def run() -> list[list[bytes]]:
        raw = env.raw_login()
        raw.cmd("UIDL")
        raw.multi()
        out = []
        for n in range(1, 7):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            out.append(raw.multi())
        raw.cmd("QUIT")
        raw.close()
        return out

    for n, lines in enumerate(await in_thread(run), start=1):
        check_body(n, lines)
    # UIDL reads no content; RETR 1 opens the window: all six in one store call.
    assert calls(env, "fetch", "fetch_many") == [("fetch_many", uids)]


async def test_batches_stay_within_the_byte_budget(
    start_server: Callable[..., Any], env: Env
) -> None:
    uids = await fill(env, 8)
    sizes = {uid: len(message(i)) for i, uid in enumerate(uids, start=1)}
    budget = sizes[uids[2]] + sizes[uids[3]] + sizes[uids[4]]  # messages 3-5 fit, no more
    small = type(env)(env.backend, await start_server(pop3_read_ahead_window_octets=budget))

    def run() -> list[list[bytes]]:
        raw = small.raw_login()
        out = []
        for n in range(1, 9):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            out.append(raw.multi())
        raw.cmd("QUIT")
        raw.close()
        return out

    for n, lines in enumerate(await in_thread(run), start=1):
        check_body(n, lines)
    batches = [arg for _, arg in calls(env, "fetch_many")]
    assert len(batches) >= 2
    assert all(sum(sizes[u] for u in batch) <= budget for batch in batches)
    # Every message came from the window, each read exactly once.
    assert sorted(u for batch in batches for u in batch) == uids
    assert calls(env, "fetch") == []


async def test_a_message_expunged_elsewhere_is_reported_and_the_window_goes_on(env: Env) -> None:
    uids = await fill(env, 5)

    def run() -> list[bytes]:
        raw = env.raw_login()
        env.backend.expunge_elsewhere(uids[2])  # an IMAP client removes message 3 meanwhile
        out = []
        for n in range(1, 6):
            status = raw.cmd(f"RETR {n}")
            out.append(status)
            if status.startswith(b"+OK"):
                check_body(n, raw.multi())
        raw.cmd("QUIT")
        raw.close()
        return out

    out = await in_thread(run)
    assert out[2] == b"-ERR Message 3 was expunged by another session.\r\n"
    assert all(s.startswith(b"+OK") for i, s in enumerate(out) if i != 2)
    # The batch found 3 missing; RETR 3 asked the store itself, 4 and 5 came from the window.
    assert calls(env, "fetch", "fetch_many") == [("fetch_many", uids), ("fetch", uids[2])]


async def test_a_failing_batch_falls_back_to_single_reads(env: Env) -> None:
    uids = await fill(env, 5)
    env.backend.fetch_many_fail_after = 1  # each batch: one message arrives, then it breaks

    def run() -> None:
        raw = env.raw_login()
        for n in range(1, 6):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            check_body(n, raw.multi())
        raw.cmd("QUIT")
        raw.close()

    await in_thread(run)
    got = calls(env, "fetch", "fetch_many")
    assert got[0] == ("fetch_many", uids)
    # Each RETR answered; each starts at most one new batch from the first message that did
    # not come, or reads its message itself: no hot loop of retries.
    assert 2 <= len(got) <= 2 * 5
    assert all(arg == uids[uids.index(arg[0]) :] for name, arg in got if name == "fetch_many")


async def test_dele_drops_from_the_window_and_quit_deletes_only_what_was_marked(
    env: Env,
) -> None:
    uids = await fill(env, 5)

    def run() -> bytes:
        raw = env.raw_login()
        assert raw.cmd("RETR 1").startswith(b"+OK")
        raw.multi()
        assert raw.cmd("DELE 3").startswith(b"+OK")
        assert raw.cmd("RETR 3") == b"-ERR Message 3 is deleted.\r\n"
        for n in (2, 4, 5):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            check_body(n, raw.multi())
        reply = raw.cmd("QUIT")
        raw.close()
        return reply

    assert (await in_thread(run)).startswith(b"+OK")
    assert sorted(await env.backend.inbox()) == [uids[0], uids[1], uids[3], uids[4]]


async def test_a_dropped_connection_with_a_full_window_deletes_nothing(env: Env) -> None:
    uids = await fill(env, 4)

    def run() -> None:
        raw = env.raw_login()
        assert raw.cmd("RETR 1").startswith(b"+OK")
        raw.multi()
        assert raw.cmd("DELE 1").startswith(b"+OK")
        raw.close()  # no QUIT: no UPDATE (RFC 1939 §6)

    await in_thread(run)
    for _ in range(100):  # the session notices the close and unlocks
        if await env.backend.lock_holder() is None:
            break
        await asyncio.sleep(0.02)
    assert sorted(await env.backend.inbox()) == uids


async def test_an_idle_client_has_its_window_freed(
    start_server: Callable[..., Any], env: Env
) -> None:
    uids = await fill(env, 4)
    quick = type(env)(env.backend, await start_server(pop3_read_ahead_idle_seconds=0.1))

    def run() -> None:
        raw = quick.raw_login()
        assert raw.cmd("RETR 1").startswith(b"+OK")
        check_body(1, raw.multi())
        time.sleep(0.5)  # messages 2-4 were read ahead with 1, then freed
        for n in (2, 3, 4):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            check_body(n, raw.multi())
        raw.cmd("QUIT")
        raw.close()

    await in_thread(run)
    # After the drop RETR 2 opens the window again, from 2.
    assert calls(env, "fetch", "fetch_many") == [("fetch_many", uids), ("fetch_many", uids[1:])]


async def test_out_of_order_retr_is_served_and_resets_the_window(env: Env) -> None:
    uids = await fill(env, 6)

    def run() -> None:
        raw = env.raw_login()
        for n in (1, 5, 2, 6):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            check_body(n, raw.multi())
        raw.cmd("QUIT")
        raw.close()

    await in_thread(run)
    # RETR 5 and 6 come from the first batch; RETR 2, behind the window, reads itself.
    assert calls(env, "fetch", "fetch_many") == [("fetch_many", uids), ("fetch", uids[1])]


async def test_read_ahead_off(start_server: Callable[..., Any], env: Env) -> None:
    off = type(env)(env.backend, await start_server(pop3_read_ahead_window_octets=0))
    uids = await fill(env, 2)

    def run() -> None:
        raw = off.raw_login()
        raw.cmd("UIDL")
        raw.multi()
        for n in (1, 2):
            raw.cmd(f"RETR {n}")
            check_body(n, raw.multi())
        raw.cmd("QUIT")
        raw.close()

    await in_thread(run)
    assert calls(env, "fetch", "fetch_many") == [("fetch", uids[0]), ("fetch", uids[1])]


async def test_a_mail_check_reads_no_content(env: Env) -> None:
    await fill(env, 3)

    def run() -> None:
        raw = env.raw_login()
        assert raw.cmd("STAT").startswith(b"+OK 3 ")
        raw.cmd("UIDL")
        assert len(raw.multi()) == 3
        raw.cmd("LIST")
        raw.multi()
        assert raw.cmd("QUIT").startswith(b"+OK")
        raw.close()

    await in_thread(run)
    assert calls(env, "fetch", "fetch_many") == []


async def test_wire_form_is_sent_as_stored_and_the_rest_is_stuffed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0042: a message the store recorded as in wire form (CRLF lines, none beginning with
    ".") goes out as stored, with no scan; one with a leading dot is byte-stuffed whether it
    was stored after the store recorded the bit or before (the bit unknown: scanned)."""
    clean = b"Subject: clean\r\n\r\nno dots here\r\nnor bare LFs\r\n"
    dotted = b"Subject: dotted\r\n\r\n.leading dot\r\nend\r\n"
    uids = [
        await env.backend.add(m) for m in (clean, dotted, clean + b"old\r\n", dotted + b"x\r\n")
    ]
    # The last two as a store from before the bit left them (schema 5 -> 6: NULL, not known).
    repo = env.backend.store.app.repo
    assert isinstance(repo, SqliteStoreRepository)
    await repo.connection.transaction(
        lambda c: c.execute("UPDATE messages SET wire_ready = NULL WHERE uid IN (?, ?)", uids[2:])
    )
    scanned: list[int] = []

    def encode(data: bytes) -> list[bytes]:
        scanned.append(len(data))
        return encode_whole(data)

    monkeypatch.setattr(window, "encode_whole", encode)

    def run() -> list[list[bytes]]:
        raw = env.raw_login()
        out = []
        for n in range(1, 5):
            assert raw.cmd(f"RETR {n}").startswith(b"+OK")
            out.append(raw.multi())
        raw.cmd("QUIT")
        raw.close()
        return out

    got = [b"".join(lines) for lines in await in_thread(run)]
    assert got == [
        clean,
        b"Subject: dotted\r\n\r\n..leading dot\r\nend\r\n",
        clean + b"old\r\n",
        b"Subject: dotted\r\n\r\n..leading dot\r\nend\r\nx\r\n",
    ]
    # All four came through the window; only the first was sent without a scan.
    assert calls(env, "fetch", "fetch_many") == [("fetch_many", uids)]
    assert scanned == [len(dotted), len(clean) + 5, len(dotted) + 3]
