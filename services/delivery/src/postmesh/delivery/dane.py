"""DANE for SMTP (RFC 7672): which MX hosts publish TLSA records, and whether a peer's
certificate chain matches them (RFC 6698 §2.1, RFC 7671).

DNSSEC validation is the resolver's: a TLSA RRset counts only when the configured resolver (a
validating one on a trusted path, as Postfix's ``smtp_dns_support_level = dnssec`` assumes)
set the AD bit on its answer (RFC 6840 §5.8). Queries ask for it with the AD bit (RFC 6840
§5.7, ``common.dns.make_resolver``)."""

from __future__ import annotations

import datetime
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from postmesh.delivery.mx import authenticated

# RFC 6698 §2.1.1 certificate usages; SMTP uses only the two DANE ones (RFC 7672 §3.1.3: the
# PKIX usages 0 and 1 are unusable, a sender has no trusted CAs to check them against).
DANE_TA, DANE_EE = 2, 3
_SELECTORS = (0, 1)  # full certificate, SubjectPublicKeyInfo (RFC 6698 §2.1.2)
_MATCHING = (0, 1, 2)  # exact, SHA2-256, SHA2-512 (RFC 6698 §2.1.3)


class TlsaLookupFailed(Exception):
    """The TLSA look-up of a host whose address records are signed failed (SERVFAIL, a
    timeout): RFC 7672 §2.2 forbids delivering to that host until it can be done."""


class DaneMismatch(Exception):
    """The peer's certificate chain matches none of the host's usable TLSA records."""


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        return (
            self.usage in (DANE_TA, DANE_EE)
            and self.selector in _SELECTORS
            and self.mtype in _MATCHING
        )

    def matches(self, der: bytes) -> bool:
        """Whether the certificate ``der`` (DER) is the one this record names."""
        selected = der if self.selector == 0 else _spki(der)
        if self.mtype == 1:
            selected = hashlib.sha256(selected).digest()
        elif self.mtype == 2:
            selected = hashlib.sha512(selected).digest()
        return selected == self.data

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}"


@dataclass(frozen=True, slots=True)
class DanePolicy:
    """What a session with one MX host must show. ``records`` empty: the host published TLSA
    records but none is usable, so TLS is mandatory without authentication (RFC 7672 §2.2,
    Postfix's "encrypt" fallback). ``names``: the reference identifiers a DANE-TA(2) chain's
    server certificate must carry (RFC 7672 §3.2.2: the TLSA base domain, and the next-hop
    domain when the MX records were signed)."""

    host: str
    records: tuple[Tlsa, ...]
    names: tuple[str, ...]

    @property
    def authenticates(self) -> bool:
        return bool(self.records)

    @property
    def key(self) -> str:
        """Tells connections made under different demands apart (the connection cache)."""
        return "dane:" + ",".join(
            sorted(f"{r.usage}{r.selector}{r.mtype}{r.data.hex()}" for r in self.records)
        )

    def check(self, chain: Sequence[bytes], now: datetime.datetime | None = None) -> str:
        """Raises DaneMismatch unless the chain (DER, the server's certificate first, as it
        sent them) matches a usable record; returns how it matched, for the log."""
        if not chain:
            raise DaneMismatch(f"{self.host} sent no certificate")
        leaf = chain[0]
        for r in self.records:
            # RFC 7672 §3.1.1: DANE-EE(3) binds the key alone; names and dates do not count.
            if r.usage == DANE_EE and r.matches(leaf):
                return f"DANE-EE {r}"
        problems: list[str] = []
        for r in self.records:
            if r.usage != DANE_TA:
                continue
            # RFC 7671 §5.2.2: the trust anchor is an issuer the server sends in its chain.
            for depth, der in enumerate(chain[1:], start=1):
                if not r.matches(der):
                    continue
                problem = _chain_problem(chain[: depth + 1], self.names, now)
                if problem is None:
                    return f"DANE-TA {r} at depth {depth}"
                problems.append(problem)
        detail = "; ".join(problems) or "no certificate matches"
        raise DaneMismatch(f"certificate of {self.host} does not match its TLSA records ({detail})")


def _spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


def _chain_problem(
    chain: Sequence[bytes], names: Iterable[str], now: datetime.datetime | None
) -> str | None:
    """For DANE-TA(2): each certificate up to the anchor (the last one) issued and signed by
    the next, the server's certificate current and naming one of ``names`` (RFC 7672
    §3.2.2-3.2.3); None when all holds, else what did not."""
    certs = [x509.load_der_x509_certificate(der) for der in chain]
    for child, issuer in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as e:  # TypeError: unsupported key
            return f"chain does not verify ({type(e).__name__}: {e})"
    leaf = certs[0]
    at = now or datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        return "server certificate expired or not yet valid"
    if not any(_name_matches(leaf, n) for n in names):
        return f"server certificate names none of {', '.join(names)}"
    return None


def _name_matches(cert: x509.Certificate, name: str) -> bool:
    """RFC 6125 DNS-ID matching, a wildcard only as the whole leftmost label (RFC 7672 §3.2.3);
    the subject CN only when there are no DNS names."""
    want = name.lower().rstrip(".")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        ids = [str(v) for v in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        ids = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    for pattern in (i.lower().rstrip(".") for i in ids):
        if pattern == want:
            return True
        if pattern.startswith("*.") and "." in want and want.split(".", 1)[1] == pattern[2:]:
            return True
    return False


async def lookup(
    resolver: dns.asyncresolver.Resolver, host: str, port: int, mx_secure: bool, domain: str
) -> DanePolicy | None:
    """The DANE policy of one MX host, whose address records were signed (the caller checks):
    None when its TLSA records are provably absent or not signed (opportunistic TLS as before);
    TlsaLookupFailed when the look-up failed."""
    qname = f"_{port}._tcp.{host}"
    try:
        answer = await resolver.resolve(qname, "TLSA", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.DNSException as e:
        raise TlsaLookupFailed(f"TLSA look-up of {qname} failed: {e}") from None
    if not authenticated(answer):
        return None  # RFC 7672 §2.2: insecure TLSA records are ignored
    records = [
        Tlsa(int(rr.usage), int(rr.selector), int(rr.mtype), bytes(rr.cert)) for rr in answer
    ]
    if not records:
        return None
    names = (host, domain) if mx_secure and domain != host else (host,)
    return DanePolicy(host, tuple(r for r in records if r.usable), names)
