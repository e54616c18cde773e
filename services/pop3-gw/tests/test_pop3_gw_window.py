"""The read-ahead window on its own (ADR 38): the byte budget holds at every moment, a vanished
message is simply not in it, and encode_whole sends what the streaming encoder sends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Sequence

from postmesh.common.backend import BackendUnavailable
from postmesh.pop3_gw.backend import MessageInfo
from postmesh.pop3_gw.content import MessageEncoder, encode_whole
from postmesh.pop3_gw.window import ReadAheadWindow


def sent(data: bytes) -> list[bytes]:
    return encode_whole(data)


class Store:
    """fetch_many over a dict, checking the window's budget each time it hands out a message."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.content = {uid: bytes([64 + uid % 26]) * size for uid, size in enumerate(sizes, 1)}
        self.infos = tuple(MessageInfo(uid, len(c), frozenset()) for uid, c in self.content.items())
        self.window: ReadAheadWindow | None = None
        self.budget = 0
        self.calls: list[list[int]] = []
        self.fail_at: int | None = None
        self.most_held = 0

    async def fetch_many(
        self, user: str, uids: Sequence[int], total_size: int
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        self.calls.append(list(uids))
        assert total_size == sum(self.infos[u - 1].size for u in uids)
        for uid in uids:
            await asyncio.sleep(0)
            assert self.window is not None
            self.most_held = max(self.most_held, self.window.held)
            assert self.window.held <= self.budget
            if uid == self.fail_at:
                raise BackendUnavailable("store went away")
            yield uid, self.content.get(uid), False


def window(
    store: Store,
    budget: int,
    *,
    deleted: set[int] | None = None,
    max_message: int = 0,
    idle_seconds: float = 60,
) -> ReadAheadWindow:
    gone = deleted if deleted is not None else set()
    w = ReadAheadWindow(
        store,  # type: ignore[arg-type]  # only fetch_many is used
        "u",
        store.infos,
        gone.__contains__,
        budget=budget,
        max_message=max_message or budget,
        max_batch=100,
        idle_seconds=idle_seconds,
    )
    store.window, store.budget = w, budget
    return w


async def retr_all(w: ReadAheadWindow, count: int) -> list[list[bytes] | None]:
    out = []
    for n in range(1, count + 1):
        out.append(await w.take(n))
        await asyncio.sleep(0)  # the client reads the response
    return out


async def test_the_budget_holds_at_every_moment_and_is_used() -> None:
    rng = random.Random(7)
    store = Store([rng.randint(100, 1000) for _ in range(60)])
    w = window(store, 4000)
    assert await retr_all(w, 60) == [sent(store.content[n]) for n in range(1, 61)]
    assert sum(len(c) for c in store.calls) == 60  # every message read once
    assert 2000 < store.most_held <= 4000
    assert w.idle and w.held == 0


async def test_nothing_before_the_first_retr_then_the_whole_budget_in_one_call() -> None:
    store = Store([100] * 50)
    w = window(store, 4000)
    await asyncio.sleep(0.01)
    assert store.calls == []
    assert await w.take(1) == sent(store.content[1])
    # ADR 0062: the first RETR asks for all the budget holds (40 x 100 octets), in one call;
    # no second call competes with it while more than half the budget is held.
    assert store.calls == [list(range(1, 41))]
    assert await w.take(2) == sent(store.content[2])
    await asyncio.sleep(0.01)
    assert len(store.calls) == 1 and w.held == 3800


async def test_what_is_left_goes_in_one_last_call_once_it_fits() -> None:
    # ADR 0052: 70 x 100 octets, budget 4000. A first call of 40 (the budget); the 30 left
    # (3000) would have been split 20 + 10 at half the budget held; the window waits until
    # they fit, with a quarter of the budget still held.
    store = Store([100] * 70)
    w = window(store, 4000)
    assert await retr_all(w, 70) == [sent(store.content[n]) for n in range(1, 71)]
    assert store.calls == [list(range(1, 41)), list(range(41, 71))]
    assert w.idle and w.held == 0


async def test_a_retr_ahead_of_the_window_moves_it_one_behind_it_does_not() -> None:
    store = Store([100] * 30)
    w = window(store, 800)  # 8 messages
    assert await w.take(10) == sent(store.content[10])
    await asyncio.sleep(0.01)
    assert store.calls == [list(range(10, 18))]
    assert await w.take(3) is None  # behind: RETR reads it itself
    assert await w.take(11) == sent(store.content[11])
    assert await w.take(20) == sent(store.content[20])  # a jump: the window starts again there
    assert store.calls[-1] == list(range(20, 28))


async def test_vanished_too_large_and_deleted_messages_are_not_in_the_window() -> None:
    store = Store([100, 100, 100, 5000, 100, 100])
    del store.content[3]  # expunged after the maildrop was listed
    w = window(store, 8000, deleted={5}, max_message=1000)
    got = await retr_all(w, 6)
    content = store.content
    assert got == [sent(content[1]), sent(content[2]), None, None, None, sent(content[6])]
    assert store.calls == [[1, 2, 3, 6]]
    assert w.held == 0


async def test_a_failed_call_releases_its_budget_and_resumes_at_the_next_retr() -> None:
    store = Store([100] * 6)
    store.fail_at = 3
    w = window(store, 10_000)
    assert await w.take(1) == sent(store.content[1])
    assert await w.take(2) == sent(store.content[2])
    await asyncio.sleep(0.01)
    assert w.held == 0
    store.fail_at = None
    assert await w.take(3) == sent(store.content[3])  # a new call, from the first that did not come
    assert await w.take(4) == sent(store.content[4])
    assert store.calls == [[1, 2, 3, 4, 5, 6], [3, 4, 5, 6]]


async def test_a_window_without_retr_for_idle_seconds_is_dropped() -> None:
    store = Store([100] * 10)
    w = window(store, 4000, idle_seconds=0.05)
    assert await w.take(1) == sent(store.content[1])
    await asyncio.sleep(0.02)
    assert await w.take(2) == sent(store.content[2])  # a RETR in time keeps it
    await asyncio.sleep(0.03)
    assert w.held > 0
    await asyncio.sleep(0.1)
    assert w.held == 0 and w.idle


async def test_drop_frees_everything_and_close_ends_the_calls() -> None:
    store = Store([100] * 10)
    w = window(store, 4000)
    assert await w.take(1) == sent(store.content[1])
    await asyncio.sleep(0.01)
    assert w.held == 900
    w.drop()
    assert w.held == 0 and w.idle
    assert await w.take(2) == sent(store.content[2])  # opens again
    assert store.calls[-1][0] == 2
    w.discard(3)
    await w.close()
    assert w.idle


def test_encode_whole_matches_the_streaming_encoder() -> None:
    rng = random.Random(11)
    alphabet = [b".", b"\r", b"\n", b"\r\n", b"a", b"..", b"\r\n.", b"\n."]
    cases = [b"", b".", b"\r\n", b".\r\n", b"a\r\n.b\r\n", b"x\n", b"x\r", b"x"]
    cases += [b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(500)]
    for data in cases:
        encoder = MessageEncoder()
        assert b"".join(encode_whole(data)) == encoder.feed(data) + encoder.finish(), data
