"""Answers kept as they are until they expire, in front of dnspython's own cache.

dnspython's cache hit still builds a resolution (name parsing, qname list, cache key, a new
lookup object) per call: with four look-ups per relayed message (MX, A, AAAA, MTA-STS TXT)
that was ~5% of delivery's CPU. This keeps the Answer objects (empty ones too, asked for
with ``raise_on_no_answer=False``) until their own expiration, the same TTL dnspython's
cache honours (negative answers: the SOA minimum, RFC 2308 §5). Errors (NXDOMAIN, timeouts)
are never kept here; dnspython's cache answers NXDOMAIN as before."""

from __future__ import annotations

import time
from collections import OrderedDict

import dns._asyncbackend
import dns.asyncresolver
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver


class AnswerMemo(dns.asyncresolver.Resolver):
    def __init__(self, inner: dns.asyncresolver.Resolver, entries: int) -> None:
        super().__init__(configure=False)
        self.inner = inner
        self.entries = entries
        self._answers: OrderedDict[tuple[str, str, bool], dns.resolver.Answer] = OrderedDict()

    async def resolve(
        self,
        qname: dns.name.Name | str,
        rdtype: dns.rdatatype.RdataType | str = dns.rdatatype.A,
        rdclass: dns.rdataclass.RdataClass | str = dns.rdataclass.IN,
        tcp: bool = False,
        source: str | None = None,
        raise_on_no_answer: bool = True,
        source_port: int = 0,
        lifetime: float | None = None,
        search: bool | None = None,
        backend: dns._asyncbackend.Backend | None = None,
    ) -> dns.resolver.Answer:
        plain = (
            rdclass in (dns.rdataclass.IN, "IN") and not tcp and source is None
            and not source_port and lifetime is None and not search and backend is None
        )  # fmt: skip
        kind = rdtype if isinstance(rdtype, str) else dns.rdatatype.to_text(rdtype)
        key = (str(qname).lower().rstrip("."), kind.upper(), raise_on_no_answer)
        if plain:
            answer = self._answers.get(key)
            if answer is not None:
                if answer.expiration > time.time():
                    self._answers.move_to_end(key)
                    return answer
                del self._answers[key]
        answer = await self.inner.resolve(
            qname, rdtype, rdclass, tcp, source, raise_on_no_answer, source_port, lifetime,
            search, backend,
        )  # fmt: skip
        if plain and self.entries > 0:
            self._answers[key] = answer
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
        return answer
