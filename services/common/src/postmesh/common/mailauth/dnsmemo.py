"""One mail transaction's DNS questions, each asked once (ADR 43).

SPF for MAIL FROM and for HELO often ask the same name, DMARC asks for the policy of the
domain SPF just looked at, and an answer with TTL 0 (as test zones and some real ones have)
is not kept by the resolver's cache. A :class:`TransactionDns` shares each answer, or the
question in flight, between the checks of one transaction, and lets the edge ask the
questions it can foresee (the MAIL FROM domain's SPF and DMARC records) at MAIL FROM, while
the client is still sending RCPT and DATA. Only for one transaction: the next one asks again."""

from __future__ import annotations

import asyncio

from postmesh.common.mailauth.dnsclient import Answer, Resolver


class TransactionDns:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._asked: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    def prefetch(self, name: str, rdtype: str) -> None:
        """Ask now; the answer (or its failure) waits for :meth:`query`."""
        self._ask(name, rdtype)

    async def query(self, name: str, rdtype: str) -> Answer:
        # Shielded: a check that is cancelled must not cancel the answer for the others.
        return await asyncio.shield(self._ask(name, rdtype))

    def kept(self, name: str, rdtype: str) -> Answer | None:
        """The answer had without waiting: this transaction's, once it came, or one the
        resolver keeps; None for a question in flight, failed or never asked and not kept."""
        asked = self._asked.get(_key(name, rdtype))
        if asked is not None:
            if asked.done() and not asked.cancelled() and asked.exception() is None:
                return asked.result()
            return None
        return self._resolver_kept(name, rdtype)

    def _resolver_kept(self, name: str, rdtype: str) -> Answer | None:
        kept = getattr(self.resolver, "kept", None)
        return kept(name, rdtype) if kept is not None else None

    def _ask(self, name: str, rdtype: str) -> asyncio.Future[Answer]:
        key = _key(name, rdtype)
        asked = self._asked.get(key)
        if asked is None:
            # An answer the resolver keeps is had at once: no task and loop turn per question
            # (ADR 59; DnsClient.kept).
            answer = self._resolver_kept(name, rdtype)
            if answer is not None:
                asked = asyncio.get_running_loop().create_future()
                asked.set_result(answer)
            else:
                asked = asyncio.ensure_future(self.resolver.query(name, rdtype))
                asked.add_done_callback(_retrieve)
            self._asked[key] = asked
        return asked

    def close(self) -> None:
        """The transaction is over: questions still in flight are dropped."""
        for asked in self._asked.values():
            asked.cancel()
        self._asked.clear()


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return name.lower().rstrip("."), rdtype.upper()


def _retrieve(done: asyncio.Future[Answer]) -> None:
    # A prefetched question nobody asked again must not log "exception never retrieved";
    # whoever queries gets the failure from the future itself.
    if not done.cancelled():
        done.exception()
