"""DMARC (RFC 7489): the author domain of the From field, policy discovery with the
organizational-domain fallback, identifier alignment of SPF and DKIM, and the disposition
(p=/sp= and pct=) a failing message gets."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postmesh.common.mailauth.authresults import header_fields, split_message
from postmesh.common.mailauth.dkim_verify import DkimResult
from postmesh.common.mailauth.dnsclient import DnsTempError, Resolver
from postmesh.common.mailauth.psl import SuffixList, default_list
from postmesh.common.mailauth.spf import SpfResult

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str
    adkim: str = "r"  # "r" relaxed, "s" strict (RFC 7489 §3.1)
    aspf: str = "r"
    pct: int = 100


def parse_record(text: str) -> DmarcRecord | None:
    """RFC 7489 §6.3-6.4; None when ``text`` is not a usable DMARC record."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if i == 0:
            # §6.4: v=DMARC1 must be the first tag, exactly.
            if key != "v" or not eq or value != "DMARC1":
                return None
            continue
        if key and eq and key not in tags:
            tags[key] = value
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # §6.6.3 step 6: an invalid or missing p= with a rua= is p=none; otherwise no record.
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    if sp not in POLICIES:
        sp = p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() else 100
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=adkim if adkim in ("r", "s") else "r",
        aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(pct, 100),
    )


class AuthorDomainError(ValueError):
    """The message has no single author domain to check (RFC 7489 §6.6.1)."""


def _from_values(message: bytes) -> list[str]:
    """The value of every From field of the header section, unfolded, in order."""
    header, _ = split_message(message)
    return [
        f.split(b":", 1)[1].decode("utf-8", "replace").replace("\r\n", "")
        for f in header_fields(header)
        if f.split(b":", 1)[0].strip().lower() == b"from" and b":" in f
    ]


def _addresses(values: list[str]) -> list[str]:
    return [addr.strip() for _, addr in email.utils.getaddresses(values) if "@" in addr]


def all_from_addresses(message: bytes) -> list[str]:
    """The addresses of every From field of the header section, in order (RFC 5322 §3.6.2
    allows one field holding a mailbox-list; a message may still carry several fields)."""
    return _addresses(_from_values(message))


def from_addresses(message: bytes) -> list[str]:
    """The addresses of the RFC 5322.From field (RFC 5322 §3.6.2: a mailbox-list). Zero or
    several From fields raise AuthorDomainError."""
    values = _from_values(message)
    if len(values) != 1:
        raise AuthorDomainError(f"{len(values)} From fields")
    return _addresses(values)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def author_domain(message: bytes) -> str:
    """The domain of the RFC 5322.From address. Zero or several From fields, or addresses of
    different domains, raise AuthorDomainError."""
    domains = {_domain(addr) for addr in from_addresses(message)}
    if len(domains) != 1 or not next(iter(domains)):
        raise AuthorDomainError("no single author domain in From")
    return domains.pop()


def author_domains(message: bytes) -> list[str]:
    """Every distinct author domain of every From field, in order. A message that names more
    than one (several addresses, or several From fields, which RFC 5322 §3.6 forbids but a
    forger sends so that a reader shows one and a checker skips them) is checked against each
    (RFC 7489 §6.6.1)."""
    return list(dict.fromkeys(d for d in map(_domain, all_from_addresses(message)) if d))


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """``result``: none, pass, fail, temperror, permerror (RFC 7489 §11.2). ``policy`` is what
    the domain asks for (p= or sp=), ``disposition`` what applies after pct= sampling."""

    result: str
    header_from: str = ""
    policy: str = "none"
    disposition: str = "none"
    policy_domain: str = ""
    reason: str = ""


async def discover(
    resolver: Resolver, domain: str, psl: SuffixList
) -> tuple[DmarcRecord | None, str]:
    """§6.6.3: the record at _dmarc.<From domain>, else at _dmarc.<organizational domain>.
    Returns (record, domain it was found at). Raises DnsTempError."""
    org = psl.organizational_domain(domain)
    for candidate in (domain,) if org == domain else (domain, org):
        answer = await resolver.query(f"_dmarc.{candidate}", "TXT")
        records = [r for r in answer.values if r.startswith("v=DMARC1")]
        if len(records) == 1:
            record = parse_record(records[0])
            if record is not None:
                return record, candidate
        # Several records: §6.6.3 step 5, none applies (and no fallback for this name).
        if len(records) > 1:
            return None, candidate
    return None, ""


def aligned(a: str, b: str, mode: str, psl: SuffixList) -> bool:
    """§3.1.1 / §3.1.2: strict is the same name, relaxed the same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return psl.organizational_domain(a) == psl.organizational_domain(b)


async def check_dmarc(
    resolver: Resolver,
    message: bytes,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    *,
    psl: SuffixList | None = None,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    """The DMARC result of the message's author domain. With several author domains (§6.6.1)
    each is checked and the most strict policy among those that fail applies; else a
    temperror, else the first domain's result."""
    psl = psl or default_list()
    domains = author_domains(message)
    if not domains:
        return DmarcResult("permerror", reason="no author domain in From")
    results = [await _check_domain(resolver, d, spf, dkim, psl, sample) for d in domains]
    failed = [r for r in results if r.result == "fail"]
    if failed:
        return max(failed, key=lambda r: POLICIES.index(r.disposition))
    return next((r for r in results if r.result == "temperror"), results[0])


async def _check_domain(
    resolver: Resolver,
    from_domain: str,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    psl: SuffixList,
    sample: Callable[[], float],
) -> DmarcResult:
    try:
        record, found_at = await discover(resolver, from_domain, psl)
    except DnsTempError:
        return DmarcResult("temperror", from_domain, reason="policy lookup timed out")
    if record is None:
        return DmarcResult("none", from_domain)
    # sp= is for subdomains: when the record came from the organizational domain.
    policy = record.sp if found_at != from_domain else record.p
    spf_ok = (
        spf is not None
        and spf.result == "pass"
        and aligned(spf.domain, from_domain, record.aspf, psl)
    )
    dkim_ok = any(
        r.result == "pass" and aligned(r.domain, from_domain, record.adkim, psl) for r in dkim
    )
    if spf_ok or dkim_ok:
        return DmarcResult("pass", from_domain, policy, "none", found_at)
    disposition = policy
    if policy != "none" and record.pct < 100 and sample() * 100 >= record.pct:
        # §6.6.4: outside the sampled percentage, the next less strict policy applies.
        disposition = POLICIES[POLICIES.index(policy) - 1]
    return DmarcResult("fail", from_domain, policy, disposition, found_at)
