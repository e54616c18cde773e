"""MTA-STS (RFC 8461): a domain's policy that its MX hosts must be reached over TLS with a valid
certificate. TXT ``_mta-sts.<domain>`` says a policy exists (and its id); the policy itself is
fetched over HTTPS from ``mta-sts.<domain>`` and cached for its max_age."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.message
import dns.rdatatype
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from postmesh.common.logging import get_logger, kv
from postmesh.common.lru import Lru
from postmesh.delivery.mx import resolve_addresses

log = get_logger(__name__)

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: 64 KB at most
MAX_AGE_CAP = 31557600  # RFC 8461 §3.2: max_age up to one year
# "No policy" (no _mta-sts TXT, or none usable) is remembered for the DNS answer's own negative
# TTL (RFC 2308 §5: the SOA's), within these bounds: not below a minute, so a zone whose TTL is
# 0 does not cost a look-up per message, and not above an hour, so a domain that starts
# publishing a policy is seen within the hour. dnspython's own default without an SOA is 300.
ABSENT_MIN_SECONDS = 60.0
ABSENT_MAX_SECONDS = 3600.0
ABSENT_WITHOUT_SOA_SECONDS = 300.0
ABSENT_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str  # "enforce", "testing" or "none"
    mx: tuple[str, ...]
    max_age: int
    id: str = ""

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"

    def allows(self, mx_host: str) -> bool:
        """RFC 8461 §4.1: an exact name, or "*." matching exactly one leftmost label."""
        host = mx_host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                _, dot, rest = host.partition(".")
                if dot and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


class PolicyError(ValueError):
    pass


def parse_policy(text: str, policy_id: str = "") -> Policy:
    """RFC 8461 §3.2: ``key: value`` lines; version STSv1, mode, one or more mx, max_age."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"bad policy line {line!r}")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("policy version is not STSv1")
    mode = (fields.get("mode") or [""])[0].lower()
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"bad policy mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("bad or missing max_age") from None
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("policy names no mx")
    return Policy(mode, mx, min(max(max_age, 0), MAX_AGE_CAP), policy_id)


def parse_txt(records: list[str]) -> str | None:
    """RFC 8461 §3.1: the id of the single ``v=STSv1`` record; None when not exactly one."""
    ids = []
    for rec in records:
        parts = [p.strip() for p in rec.split(";") if p.strip()]
        if not parts or parts[0] != "v=STSv1":
            continue
        kv_ = dict(p.partition("=")[::2] for p in parts[1:])
        ident = kv_.get("id", "")
        if ident and ident.isalnum() and len(ident) <= 32:
            ids.append(ident)
    return ids[0] if len(ids) == 1 else None


class _DnsResolver(AbstractResolver):
    """aiohttp resolves the policy host through our resolver (POSTMESH_DNS_SERVERS)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_addresses(self.resolver, host)
        if not addresses:
            raise OSError(f"{host} has no address")
        return [
            ResolveResult(
                hostname=host, host=a, port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET, proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]  # fmt: skip

    async def close(self) -> None:
        return None


@dataclass
class _Cached:
    policy: Policy
    expires: float = field(default=0.0)


def negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM), from the authority
    section; ABSENT_WITHOUT_SOA_SECONDS when the reply carries no SOA."""
    for rrset in response.authority if response is not None else ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return ABSENT_WITHOUT_SOA_SECONDS


def absent_for(ttl: float) -> float:
    return min(max(ttl, ABSENT_MIN_SECONDS), ABSENT_MAX_SECONDS)


class MtaSts:
    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        https_port: int = 443,
        ca_file: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.resolver = resolver
        self.https_port = https_port
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.timeout = timeout
        self.cache: dict[str, _Cached] = {}
        # Domains without a policy (and none cached): until when that answer holds.
        self.absent: Lru[str, float] = Lru(ABSENT_ENTRIES)
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> Policy | None:
        """The policy in force for ``domain``, or None. Failures never block delivery by
        themselves (RFC 8461 §5.1): without a usable new policy the cached one stays in force."""
        domain = domain.lower().rstrip(".")
        until = self.absent.get(domain)
        if until is not None:
            if time.time() < until:
                return None  # no TXT record moments ago: no look-up, no lock (§5.1)
            self.absent.pop(domain)
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one fetch per domain at a time
            cached = self.cache.get(domain)
            now = time.time()
            if cached is not None and now >= cached.expires:
                cached = None
                self.cache.pop(domain, None)
            try:
                policy_id, ttl = await self._txt_id(domain)
            except dns.exception.DNSException as e:
                # A failed look-up says nothing about the policy: not remembered as absent.
                log.info("MTA-STS TXT look-up failed", extra=kv(domain=domain, error=str(e)))
                return cached.policy if cached else None
            if policy_id is None:
                if cached is not None:
                    return cached.policy  # §5.1: an unexpired cached policy stays in force
                self.absent.put(domain, now + absent_for(ttl))
                return None
            if cached is not None and cached.policy.id == policy_id:
                return cached.policy
            try:
                policy = parse_policy(await self._fetch(domain), policy_id)
            except (PolicyError, aiohttp.ClientError, OSError, TimeoutError, UnicodeError) as e:
                log.warning("MTA-STS policy fetch failed", extra=kv(domain=domain, error=str(e)))
                return cached.policy if cached else None
            self.cache[domain] = _Cached(policy, now + policy.max_age)
            log.info(
                "MTA-STS policy",
                extra=kv(domain=domain, mode=policy.mode, mx=list(policy.mx), id=policy_id),
            )
            return policy

    async def _txt_id(self, domain: str) -> tuple[str | None, float]:
        """The policy id of the TXT record (None: no usable record) and how long the answer
        holds (its TTL; the negative TTL for a name or record that does not exist)."""
        name = f"_mta-sts.{domain}"
        try:
            answer = await self.resolver.resolve(
                name, "TXT", search=False, raise_on_no_answer=False
            )  # no TXT records: an empty answer, no exception (see mx.resolve_mx)
        except dns.resolver.NXDOMAIN as e:
            responses = e.kwargs.get("responses") or {}
            return None, negative_ttl(next(iter(responses.values()), None))
        expiration = getattr(answer, "expiration", None)
        ttl = expiration - time.time() if expiration else ABSENT_WITHOUT_SOA_SECONDS
        records = [b"".join(rr.strings).decode("ascii", "replace") for rr in answer]
        return parse_txt(records), ttl

    async def _fetch(self, domain: str) -> str:
        """RFC 8461 §3.3: HTTPS with a valid certificate for mta-sts.<domain>, no redirects,
        200 only, text/plain."""
        port = "" if self.https_port == 443 else f":{self.https_port}"
        url = f"https://mta-sts.{domain}{port}/.well-known/mta-sts.txt"
        connector = aiohttp.TCPConnector(ssl=self.ssl, resolver=_DnsResolver(self.resolver))
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise PolicyError(f"{url} answered HTTP {resp.status}")
            if resp.content_type != "text/plain":
                raise PolicyError(f"{url} is {resp.content_type}, not text/plain")
            body = await resp.content.read(MAX_POLICY_BYTES + 1)
            if len(body) > MAX_POLICY_BYTES:
                raise PolicyError(f"{url} is larger than 64 KB")
            return body.decode("utf-8")
