"""ADR 44: auth's REMOTE answer is reused per domain for a few seconds, and only that one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_delivery_flow import FakeAuth, FakeQueue, inbound, make_service

from postmesh.api.auth.v1 import auth_pb2
from postmesh.common import expiring_keys
from postmesh.delivery.remote_domains import RemoteDomains


class CountingAuth(FakeAuth):
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ResolveRecipient(self, req: auth_pb2.ResolveRecipientRequest, timeout: float) -> Any:
        self.asked.append(req.address)
        return await super().ResolveRecipient(req, timeout)


def test_a_remote_answer_holds_for_the_domain_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(expiring_keys.time, "monotonic", lambda: now[0])
    domains = RemoteDomains(5.0)
    assert not domains.known("a@remote.test")
    domains.remember("a@remote.test")
    assert domains.known("b@Remote.TEST")  # any address of the domain, any case
    assert not domains.known("a@other.test")
    now[0] += 5.0
    assert not domains.known("b@remote.test")  # expired: ask auth again


def test_zero_seconds_remembers_nothing_and_the_table_is_bounded() -> None:
    off = RemoteDomains(0)
    off.remember("a@remote.test")
    assert not off.known("a@remote.test")
    small = RemoteDomains(60, kept=2)
    for d in ("a", "b", "c"):
        small.remember(f"x@{d}.test")
    assert [small.known(f"x@{d}.test") for d in ("a", "b", "c")] == [False, True, True]


async def test_auth_is_asked_once_per_remote_domain_not_per_recipient(tmp_path: Path) -> None:
    svc, _store, bus = await make_service(tmp_path)
    auth = CountingAuth()
    svc.auth = auth  # type: ignore[assignment]
    await svc.process(inbound("x@remote.test", "b@example.test"))
    msg = inbound("y@remote.test", "Z@REMOTE.test", "c@example.test", "gone@example.test")
    msg.queue_id = "Q2"
    await svc.process(msg)
    # Remote: asked for the first address only. Local answers are never reused: each local
    # recipient is asked every time (a user removed or disabled is seen at once).
    assert auth.asked == ["x@remote.test", "b@example.test", "c@example.test", "gone@example.test"]
    queue: FakeQueue = svc.queue  # type: ignore[assignment]
    assert sorted(queue.entries) == [
        ("Q1", "x@remote.test"), ("Q2", "Z@REMOTE.test"), ("Q2", "y@remote.test"),
    ]  # fmt: skip
    await bus.stop()


async def test_without_the_cache_every_recipient_is_resolved(tmp_path: Path) -> None:
    svc, _store, bus = await make_service(tmp_path, remote_domain_cache_seconds=0)
    auth = CountingAuth()
    svc.auth = auth  # type: ignore[assignment]
    await svc.process(inbound("x@remote.test", "y@remote.test"))
    assert auth.asked == ["x@remote.test", "y@remote.test"]
    await bus.stop()


class SlowAuth(CountingAuth):
    """Answers only once released, so records handled at once overlap their look-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def ResolveRecipient(self, req: auth_pb2.ResolveRecipientRequest, timeout: float) -> Any:
        self.asked.append(req.address)
        await self.release.wait()
        return await FakeAuth.ResolveRecipient(self, req, timeout)


async def test_records_handled_at_once_share_the_look_up_of_one_recipient(
    tmp_path: Path,
) -> None:
    """ADR 59: local answers are still never kept, but records being handled at the same time
    (a batch of the bus) that name the same recipient ask auth once between them."""
    svc, store, bus = await make_service(tmp_path)
    auth = SlowAuth()
    svc.auth = auth  # type: ignore[assignment]
    msgs = [inbound("b@example.test") for _ in range(4)] + [inbound("c@example.test")]
    for i, m in enumerate(msgs):
        m.queue_id = f"Q{i}"
    handling = asyncio.gather(*(svc.process(m) for m in msgs))
    for _ in range(5):
        await asyncio.sleep(0)
    auth.release.set()
    await handling
    assert auth.asked == ["b@example.test", "c@example.test"]
    assert sorted(store.delivered) == [
        ("Q0", "b@example.test"), ("Q1", "b@example.test"), ("Q2", "b@example.test"),
        ("Q3", "b@example.test"), ("Q4", "c@example.test"),
    ]  # fmt: skip
    # Once answered, nothing is kept: the next record asks again.
    later = inbound("b@example.test")
    later.queue_id = "Q5"
    await svc.process(later)
    assert auth.asked == ["b@example.test", "c@example.test", "b@example.test"]
    await bus.stop()
