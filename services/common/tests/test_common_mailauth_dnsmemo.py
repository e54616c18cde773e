"""One transaction's DNS questions asked once (ADR 43)."""

from __future__ import annotations

import asyncio

import pytest

from postmesh.common.mailauth.dnsclient import Answer, DnsTempError
from postmesh.common.mailauth.dnsmemo import TransactionDns
from postmesh.common.mailauth.fakedns import FakeResolver


async def test_a_question_is_asked_once_and_prefetched_answers_are_used() -> None:
    dns = FakeResolver()
    dns.add("example.net", "TXT", ["v=spf1 -all"])
    memo = TransactionDns(dns)
    memo.prefetch("_dmarc.example.net", "TXT")
    answers = await asyncio.gather(
        memo.query("example.net", "TXT"), memo.query("Example.NET.", "txt")
    )
    assert answers == [Answer(["v=spf1 -all"])] * 2
    assert await memo.query("_dmarc.example.net", "TXT") == Answer([], nxdomain=True)
    assert dns.queries == [("_dmarc.example.net", "TXT"), ("example.net", "TXT")]
    # Another transaction asks again.
    assert await TransactionDns(dns).query("example.net", "TXT") == answers[0]
    assert len(dns.queries) == 3


async def test_failures_reach_each_asker_and_close_drops_what_is_in_flight() -> None:
    dns = FakeResolver()
    dns.temperror.add("slow.example")
    memo = TransactionDns(dns)
    memo.prefetch("slow.example", "TXT")  # failing with nobody waiting logs nothing
    for _ in range(2):
        with pytest.raises(DnsTempError):
            await memo.query("slow.example", "TXT")
    assert dns.queries == [("slow.example", "TXT")]

    release = asyncio.Event()

    class Hanging(FakeResolver):
        async def query(self, name: str, rdtype: str) -> Answer:
            await release.wait()
            return Answer([])

    memo = TransactionDns(Hanging())
    waiting = asyncio.ensure_future(memo.query("x.example", "TXT"))
    await asyncio.sleep(0)
    memo.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_cancelled_asker_does_not_cancel_the_answer_for_others() -> None:
    release = asyncio.Event()
    calls = 0

    class Slow(FakeResolver):
        async def query(self, name: str, rdtype: str) -> Answer:
            nonlocal calls
            calls += 1
            await release.wait()
            return Answer(["v"])

    memo = TransactionDns(Slow())
    first = asyncio.ensure_future(memo.query("a.example", "TXT"))
    second = asyncio.ensure_future(memo.query("a.example", "TXT"))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == Answer(["v"])
    assert calls == 1


async def test_an_answer_the_resolver_keeps_is_had_without_asking() -> None:
    """A resolver with ``kept`` (DnsClient, ADR 59) answers from what it keeps at once; the
    others are asked as before."""

    class Keeping(FakeResolver):
        def kept(self, name: str, rdtype: str) -> Answer | None:
            return Answer(["kept"]) if name == "kept.example" else None

    dns = Keeping()
    dns.add("asked.example", "TXT", ["asked"])
    memo = TransactionDns(dns)
    memo.prefetch("kept.example", "TXT")
    assert await memo.query("kept.example", "TXT") == Answer(["kept"])
    assert await memo.query("asked.example", "TXT") == Answer(["asked"])
    assert dns.queries == [("asked.example", "TXT")]
    memo.close()
