"""MX resolution (RFC 5321 §5.1) with null MX (RFC 7505): which hosts to try, in what order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.rdatatype
import dns.resolver


class DnsError(Exception):
    """A look-up failed. ``permanent``: the name does not exist (retrying cannot help);
    otherwise the DNS is unreachable or answered SERVFAIL (defer)."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class NullMx(Exception):
    """RFC 7505 §3: the domain accepts no mail (``MX 0 .``)."""


def authenticated(answer: object) -> bool:
    """Whether the resolver vouched for an answer by DNSSEC: the AD bit (RFC 4035 §3.2.3),
    trusted as Postfix's ``smtp_dns_support_level = dnssec`` trusts it, so the resolver must
    validate and be reached over a trusted path (docs/operations.md)."""
    response = getattr(answer, "response", None)
    return response is not None and bool(response.flags & dns.flags.AD)


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int
    # RFC 5321 §5.1: no MX records, so the domain's own address records act as one MX.
    implicit: bool = False
    # The MX answer (or, for an implicit MX, the answer that there is none) was signed.
    dnssec: bool = False


@dataclass(frozen=True, slots=True)
class HostAddresses:
    addresses: list[str]
    # Every address answer (A and AAAA, empty ones too) was signed.
    dnssec: bool


def order_mx(records: Sequence[tuple[int, str]], dnssec: bool = False) -> list[MxHost]:
    """Lowest preference first; RFC 5321 §5.1: hosts of equal preference in random order, so
    load spreads across them."""
    by_pref: dict[int, list[str]] = {}
    for pref, name in records:
        by_pref.setdefault(pref, []).append(name)
    hosts: list[MxHost] = []
    for pref in sorted(by_pref):
        names = list(dict.fromkeys(by_pref[pref]))
        random.shuffle(names)
        hosts += [MxHost(n, pref, dnssec=dnssec) for n in names]
    return hosts


async def resolve_mx(resolver: dns.asyncresolver.Resolver, domain: str) -> list[MxHost]:
    """The hosts to try for ``domain``. Raises NullMx, or DnsError for NXDOMAIN (permanent)
    and timeouts / SERVFAIL (temporary)."""
    try:
        # An empty answer instead of NoAnswer: dnspython builds that exception's text (the
        # whole question, formatted) even from its cache, a cost on every message.
        answer = await resolver.resolve(domain, "MX", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        raise DnsError(f"domain {domain} does not exist (NXDOMAIN)", permanent=True) from None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
        raise DnsError(f"MX look-up of {domain} failed: {e}", permanent=False) from None
    except dns.exception.DNSException as e:
        raise DnsError(f"MX look-up of {domain} failed: {e}", permanent=False) from None
    records = []
    for rr in answer:
        target = rr.exchange.to_text(omit_final_dot=True).lower()
        records.append((int(rr.preference), target))
    if not records:
        # RFC 5321 §5.1: no MX RRs: the domain is its own MX, preference 0.
        return [MxHost(domain.lower().rstrip("."), 0, implicit=True, dnssec=authenticated(answer))]
    usable = [(p, t) for p, t in records if t not in ("", ".")]
    if not usable:
        # RFC 7505 §3: a single "MX 0 ." (and, defensively, only dot targets) means no mail.
        raise NullMx(domain)
    return order_mx(usable, authenticated(answer))


async def resolve_addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """A and AAAA of an MX host (IPv4 first: the tests and most peers are IPv4). Empty when the
    name has no addresses; DnsError(temporary) when the DNS did not answer."""
    return (await resolve_host(resolver, host)).addresses


async def resolve_host(resolver: dns.asyncresolver.Resolver, host: str) -> HostAddresses:
    """:func:`resolve_addresses`, and whether all of it was signed (RFC 7672 §2.2.2: DANE
    applies to a host whose address records are)."""
    addresses: list[str] = []
    failures: list[str] = []
    signed = True
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = await resolver.resolve(host, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            signed = False  # dnspython's exception keeps no flags: not known to be signed
            continue
        except dns.exception.DNSException as e:
            failures.append(f"{dns.rdatatype.to_text(rdtype)}: {e}")
            signed = False
            continue
        signed = signed and authenticated(answer)
        addresses += [rr.to_text() for rr in answer]
    if not addresses and failures:
        raise DnsError(f"address look-up of {host} failed: {'; '.join(failures)}", False)
    return HostAddresses(addresses, signed)
