"""Asynchronous DNS for mail authentication: dnspython's resolver pointed at
POSTMESH_DNS_SERVERS, with a per-query timeout and an optional TTL cache.

Results are normalised the way SPF/DKIM/DMARC need them (RFC 7208 §2.6, RFC 7489 §6.6.3):
an empty answer or NXDOMAIN is "no record" (an empty list; :attr:`Answer.nxdomain` tells them
apart for the void-lookup count), while a timeout or a server failure raises
:class:`DnsTempError`, which the callers turn into ``temperror``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename

from postmesh.common.dns import make_resolver
from postmesh.common.lru import Lru


class DnsTempError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no server reachable)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one type at one name. TXT values are the concatenated character-strings
    of each record (RFC 7208 §3.3); MX values are ``(preference, exchange)``; others text."""

    values: list[str]
    nxdomain: bool = False


class Resolver(Protocol):
    async def query(self, name: str, rdtype: str) -> Answer: ...


class DnsClient:
    """One resolver for the process, made by :func:`postmesh.common.dns.make_resolver` (so
    POSTMESH_DNS_SERVERS means the same here as in delivery). With ``cache_entries`` answers
    are kept for their TTL: the same sender domain's SPF and DMARC records are then not asked
    again for every message.

    An answer dnspython's cache holds is also kept here, already in :class:`Answer` form, until
    the time dnspython's entry expires: asking dnspython again cost the MX ~0.05 ms of CPU a
    question (its name parsing, a resolution object, and for a cached NXDOMAIN an exception
    built and raised), three or four questions a message (ADR 59). Nothing is kept longer
    than dnspython would keep it, so TTL 0 answers are never reused."""

    def __init__(
        self,
        servers: str,
        timeout: float,
        cache_entries: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = make_resolver(servers, timeout, cache_entries)
        self.timeout = timeout
        # (name, rdtype) -> (expiry on the clock dnspython uses, the answer).
        self._answers: Lru[tuple[str, str], tuple[float, Answer]] | None = (
            Lru(cache_entries) if cache_entries > 0 else None
        )
        self._clock = clock

    def kept(self, name: str, rdtype: str) -> Answer | None:
        """The answer :meth:`query` would give from what is kept, without waiting; None when
        it would have to ask."""
        if self._answers is None or (kept := self._answers.get((name, rdtype))) is None:
            return None
        if kept[0] > self._clock():
            return kept[1]
        self._answers.pop((name, rdtype))
        return None

    async def query(self, name: str, rdtype: str) -> Answer:
        kept = self.kept(name, rdtype)
        if kept is not None:
            return kept
        answer, expiry = await self._ask(name, rdtype)
        if self._answers is not None and expiry > self._clock():
            self._answers.put((name, rdtype), (expiry, answer))
        return answer

    async def _ask(self, name: str, rdtype: str) -> tuple[Answer, float]:
        """The answer, and until when dnspython's cache keeps it (0: not kept)."""
        try:
            qname = dns.name.from_text(name)
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
            return Answer([], nxdomain=True), 0.0
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer([], nxdomain=True), self._nxdomain_expiry(qname)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise DnsTempError(f"{rdtype} {name}: {type(e).__name__}") from None
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{rdtype} {name}: {e}") from None
        expiry = float(answer.expiration) if self._resolver.cache else 0.0
        if answer.rrset is None:
            return Answer([]), expiry
        return Answer([_rdata_text(r, rdtype) for r in answer.rrset]), expiry

    def _nxdomain_expiry(self, qname: dns.name.Name) -> float:
        """dnspython keeps a name's NXDOMAIN under the type ANY (for every type of the name)."""
        cache = self._resolver.cache
        if not cache:
            return 0.0
        entry = cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        return 0.0 if entry is None else float(entry.expiration)


def _rdata_text(rdata: object, rdtype: str) -> str:
    kind = dns.rdatatype.from_text(rdtype)
    if kind == dns.rdatatype.TXT:
        strings: tuple[bytes, ...] = rdata.strings  # type: ignore[attr-defined]
        return b"".join(strings).decode("utf-8", "replace")
    if kind == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"  # type: ignore[attr-defined]
    if kind in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return str(rdata.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return str(rdata.to_text())  # type: ignore[attr-defined]


def reverse_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)
