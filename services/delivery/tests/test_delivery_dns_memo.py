"""AnswerMemo: an answer is reused until its expiration, per name, type and empty-answer
mode; errors are never kept."""

from __future__ import annotations

import time
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest

from postmesh.delivery.dns_memo import AnswerMemo


class Answer:
    def __init__(self, ttl: float) -> None:
        self.expiration = time.time() + ttl


class Inner(dns.asyncresolver.Resolver):
    def __init__(self) -> None:
        super().__init__(configure=False)
        self.asked: list[tuple[str, Any, bool]] = []
        self.ttl = 300.0
        self.fail: Exception | None = None

    async def resolve(self, qname: Any, rdtype: Any = "A", *args: Any, **kw: Any) -> Any:
        raise_on_no_answer = args[3] if len(args) > 3 else kw.get("raise_on_no_answer", True)
        self.asked.append((str(qname), rdtype, raise_on_no_answer))
        if self.fail is not None:
            raise self.fail
        return Answer(self.ttl)


async def test_answers_are_reused_until_they_expire() -> None:
    inner = Inner()
    memo = AnswerMemo(inner, 100)
    a = await memo.resolve("MX.Example.test.", "A", search=False)
    assert await memo.resolve("mx.example.test", dns.rdatatype.A, search=False) is a
    await memo.resolve("mx.example.test", "AAAA", search=False, raise_on_no_answer=False)
    await memo.resolve("mx.example.test", "AAAA", search=False, raise_on_no_answer=False)
    await memo.resolve("mx.example.test", "AAAA", search=False)  # another mode: asked
    assert len(inner.asked) == 3
    inner.ttl = -1  # already expired when stored: asked every time
    await memo.resolve("other.test", "MX", search=False)
    await memo.resolve("other.test", "MX", search=False)
    assert len(inner.asked) == 5


async def test_errors_are_not_kept_and_the_table_is_bounded() -> None:
    inner = Inner()
    memo = AnswerMemo(inner, 2)
    inner.fail = dns.resolver.NXDOMAIN()
    for _ in range(2):
        with pytest.raises(dns.resolver.NXDOMAIN):
            await memo.resolve("gone.test", "MX", search=False)
    assert len(inner.asked) == 2
    inner.fail = None
    for name in ("a.test", "b.test", "c.test", "a.test"):
        await memo.resolve(name, "A", search=False)
    assert [q for q, _, _ in inner.asked[2:]] == ["a.test", "b.test", "c.test", "a.test"]
