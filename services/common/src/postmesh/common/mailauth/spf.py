"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf's evaluator and our
asynchronous resolver.

pyspf is synchronous and calls the module-level ``spf.DNSLookup`` for every query. A check
first runs on the event loop from the answers had without waiting (the transaction's, and
those the resolver keeps for their TTL): a sender seen within its records' TTL costs no
thread hand-off (ADR 79). When a question would need the network, that attempt is dropped and
the check runs in a worker thread, whose hook sends each query back to the event loop's
resolver (timeouts and servers from POSTMESH_DNS_SERVERS), so SPF uses the same DNS as DKIM and
DMARC and never blocks the loop on the network. A thread-local says how the hook answers;
outside a check it is pyspf's own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import spf

from postmesh.common.mailauth.dnsclient import Answer, DnsTempError, Resolver

# RFC 7208 §4.6.4: at most 10 lookups and 2 void lookups, enforced by pyspf; this bounds the
# wall time of one check (RFC 7208 §4.6.4 suggests at least 20 s).
CHECK_TIMEOUT_SECONDS = 20.0
# SPF checks wait on DNS, not CPU: more threads than cores, apart from the default executor.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="spf")
_current = threading.local()
_pyspf_lookup = spf.DNSLookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    """``result`` is one of RFC 7208 §2.6: none, neutral, pass, fail, softfail, temperror,
    permerror. ``domain`` is the identity's domain checked (what DMARC aligns)."""

    result: str
    identity: str  # "mailfrom" or "helo"
    domain: str
    explanation: str = ""


class _FromKept:
    """The hook's state for a check on the event loop: answers only from ``kept``, and a
    note of any question it could not answer so."""

    __slots__ = ("kept", "missed")

    def __init__(self, kept: Callable[[str, str], Answer | None]) -> None:
        self.kept = kept
        self.missed = False


class _NotKept(Exception):
    """A question that would need the network, in a check on the event loop."""


def _bridged_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
    state = getattr(_current, "state", None)
    if state is None:
        return list(_pyspf_lookup(name, qtype, strict, timeout))
    if isinstance(state, _FromKept):
        answer = state.kept(name, qtype)
        if answer is None:
            # pyspf swallows some exceptions (an exp= explanation, ptr); the note decides.
            state.missed = True
            raise _NotKept(f"{qtype} {name}")
        return _records(name, qtype, answer)
    loop, resolver = state
    future = asyncio.run_coroutine_threadsafe(resolver.query(name, qtype), loop)
    try:
        answer = future.result(timeout=timeout + 1)
    except (DnsTempError, concurrent.futures.TimeoutError) as e:
        future.cancel()
        raise spf.TempError(f"DNS {e}") from None
    return _records(name, qtype, answer)


def _records(name: str, qtype: str, answer: Answer) -> list[Any]:
    """An answer as pyspf's DNS hook returns it."""
    out: list[Any] = []
    for value in answer.values:
        if qtype in ("TXT", "SPF"):
            out.append(((name, qtype), [value.encode("utf-8", "surrogateescape")]))
        elif qtype == "MX":
            pref, _, exchange = value.partition(" ")
            out.append(((name, qtype), (int(pref), exchange)))
        else:
            out.append(((name, qtype), value))
    return out


spf.DNSLookup = _bridged_lookup


def _check(state: object, ip: str, sender: str, helo: str) -> tuple[str, str]:
    """pyspf's check with its DNS hook answering as ``state`` says (``_bridged_lookup``)."""
    _current.state = state
    try:
        q = spf.query(i=ip, s=sender, h=helo, querytime=CHECK_TIMEOUT_SECONDS)
        result, _code, explanation = q.check()
        return str(result), str(explanation)
    finally:
        _current.state = None


def _run(
    loop: asyncio.AbstractEventLoop, resolver: Resolver, ip: str, sender: str, helo: str
) -> tuple[str, str]:
    return _check((loop, resolver), ip, sender, helo)


def _from_kept(resolver: Resolver, ip: str, sender: str, helo: str) -> tuple[str, str] | None:
    """The check on the calling (event loop) thread from the answers had without waiting;
    None when it needed another. pyspf keeps no state between checks but its query object."""
    kept = getattr(resolver, "kept", None)
    if kept is None:
        return None
    state = _FromKept(kept)
    try:
        outcome = _check(state, ip, sender, helo)
    except _NotKept:
        return None
    return None if state.missed else outcome


async def _evaluate(resolver: Resolver, ip: str, sender: str, helo: str) -> tuple[str, str]:
    outcome = _from_kept(resolver, ip, sender, helo)
    if outcome is not None:
        return outcome
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, _run, loop, resolver, ip, sender, helo)


async def _publishes_no_spf(resolver: Resolver, domain: str) -> bool:
    """True when ``domain`` has no SPF record, asked on the event loop: RFC 7208 §4.5 makes
    the result "none" then, which is what pyspf answers, without a worker thread and its
    hand-offs (most senders' HELO names, many small domains). With a record, or a DNS error,
    pyspf decides, asking again (the transaction's memo or the resolver's cache answers)."""
    if spf.DELEGATE:
        return False  # pyspf would look for a delegated record too
    try:
        answer = await resolver.query(domain, "TXT")
    except DnsTempError:
        return False
    # pyspf's own test of "a version section of exactly v=spf1" (§4.5).
    return not any(spf.RE_SPF.match(v.encode("utf-8", "surrogateescape")) for v in answer.values)


async def check_spf(resolver: Resolver, ip: str, sender: str, helo: str) -> SpfResult:
    """The MAIL FROM identity (RFC 7208 §2.4), or, for the null reverse path, the HELO
    identity as ``postmaster@helo`` (§2.4, §2.3)."""
    if sender:
        identity, domain = "mailfrom", sender.rpartition("@")[2].lower()
    else:
        identity, domain = "helo", helo.lower()
        sender = f"postmaster@{helo}"
    if not domain or domain.startswith("["):
        # An address literal is no domain to ask about (RFC 7208 §2.3).
        return SpfResult("none", identity, domain)
    if await _publishes_no_spf(resolver, domain):
        return SpfResult("none", identity, domain)
    result, explanation = await _evaluate(resolver, ip, sender, helo)
    return SpfResult(result, identity, domain, explanation)


async def check_helo(resolver: Resolver, ip: str, helo: str) -> SpfResult:
    """The HELO identity on its own (RFC 7208 §2.3), as a second result."""
    if not helo or helo.startswith("[") or "." not in helo:
        return SpfResult("none", "helo", helo.lower())
    if await _publishes_no_spf(resolver, helo):
        return SpfResult("none", "helo", helo.lower())
    result, explanation = await _evaluate(resolver, ip, f"postmaster@{helo}", helo)
    return SpfResult(result, "helo", helo.lower(), explanation)
