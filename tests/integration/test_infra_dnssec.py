"""The DNSSEC test DNS (tests/integration/infra/dnssec.py) over the wire: real NSD and Unbound,
asked with dnspython the way delivery asks (the AD bit in the query, RFC 6840 §5.7), or with
EDNS DO."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.integration.infra.dnssec import DnssecResolver, SignedZone

# A DANE-EE SPKI SHA-256 association (RFC 7671 §5.1); the bytes hashed do not matter here.
TLSA_DATA = hashlib.sha256(b"postmesh dane test key").hexdigest()

ZONES = [
    SignedZone(
        "dane.test",
        [
            ("dane.test", "MX", "10 mx.dane.test."),
            ("mx.dane.test", "A", "127.0.0.5"),
            ("_25._tcp.mx.dane.test", "TLSA", f"3 1 1 {TLSA_DATA}"),
        ],
    ),
    SignedZone(
        "plain.test",
        [("plain.test", "MX", "10 mx.plain.test"), ("mx.plain.test", "A", "127.0.0.6")],
        signed=False,
    ),
    SignedZone(
        "bogus.test",
        [
            ("mx.bogus.test", "A", "127.0.0.7"),
            ("_25._tcp.mx.bogus.test", "TLSA", f"3 1 1 {TLSA_DATA}"),
        ],
        bogus=True,
    ),
]


@pytest.fixture(scope="module")
def resolver() -> Iterator[DnssecResolver]:
    with DnssecResolver(ZONES) as r:
        yield r


def ask(
    resolver: DnssecResolver, name: str, rdtype: str, *, do: bool = False, cd: bool = False
) -> dns.message.Message:
    """One query to the validating resolver over UDP: RD and AD set, plus EDNS DO if ``do``
    and CD (checking disabled) if ``cd``."""
    host, port = resolver.servers.split(":")
    query = dns.message.make_query(name, rdtype, want_dnssec=do)
    query.flags |= dns.flags.AD | (dns.flags.CD if cd else 0)
    return dns.query.udp(query, host, port=int(port), timeout=3)


def rrset(reply: dns.message.Message, name: str, rdtype: str) -> dns.rrset.RRset | None:
    return reply.get_rrset(
        reply.answer, dns.name.from_text(name), dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
    )


def answer(reply: dns.message.Message, name: str, rdtype: str) -> list[str]:
    found = rrset(reply, name, rdtype)
    return sorted(rd.to_text() for rd in found) if found is not None else []


def signed_by(section: list[dns.rrset.RRset], signer: str) -> set[str]:
    """The types covered by RRSIGs of ``signer`` in ``section``."""
    return {
        dns.rdatatype.to_text(rd.type_covered)
        for rrs in section
        if rrs.rdtype == dns.rdatatype.RRSIG
        for rd in rrs
        if rd.signer == dns.name.from_text(signer)
    }


def test_servers_is_the_loopback_resolver(resolver: DnssecResolver) -> None:
    host, port = resolver.servers.split(":")
    assert host == "127.0.0.1"
    assert int(port) == resolver.port != resolver.nsd_port


@pytest.mark.parametrize(
    ("name", "rdtype", "data"),
    [
        ("mx.dane.test", "A", ["127.0.0.5"]),
        ("dane.test", "MX", ["10 mx.dane.test."]),
        ("_25._tcp.mx.dane.test", "TLSA", [f"3 1 1 {TLSA_DATA}"]),
    ],
)
@pytest.mark.parametrize("do", [False, True], ids=["ad-bit", "edns-do"])
def test_signed_zone_answers_are_authenticated(
    resolver: DnssecResolver, name: str, rdtype: str, data: list[str], do: bool
) -> None:
    reply = ask(resolver, name, rdtype, do=do)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AD, reply
    assert answer(reply, name, rdtype) == data
    # The signatures come only to a query with DO (RFC 4035 §3.2.1).
    assert signed_by(reply.answer, "dane.test") == ({rdtype} if do else set())


@pytest.mark.parametrize("do", [False, True], ids=["ad-bit", "edns-do"])
def test_signed_zone_nodata_is_authenticated(resolver: DnssecResolver, do: bool) -> None:
    # mx.dane.test has an A record, no AAAA and no TLSA at that name.
    for rdtype in ("AAAA", "TLSA"):
        reply = ask(resolver, "mx.dane.test", rdtype, do=do)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer == []
        assert reply.flags & dns.flags.AD, reply
    if do:  # the proof: the name's NSEC, whose type bitmap has no AAAA/TLSA
        nsec = reply.get_rrset(
            reply.authority, dns.name.from_text("mx.dane.test"), dns.rdataclass.IN,
            dns.rdatatype.NSEC,
        )  # fmt: skip
        assert nsec is not None
        assert "TLSA" not in nsec[0].to_text().split()[1:]
        assert signed_by(reply.authority, "dane.test") >= {"NSEC", "SOA"}


@pytest.mark.parametrize("do", [False, True], ids=["ad-bit", "edns-do"])
def test_signed_zone_nxdomain_is_authenticated(resolver: DnssecResolver, do: bool) -> None:
    for name, rdtype in (("nothing.dane.test", "A"), ("_25._tcp.nomx.dane.test", "TLSA")):
        reply = ask(resolver, name, rdtype, do=do)
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.answer == []
        assert reply.flags & dns.flags.AD, reply
        if do:
            assert signed_by(reply.authority, "dane.test") >= {"NSEC", "SOA"}


@pytest.mark.parametrize("do", [False, True], ids=["ad-bit", "edns-do"])
def test_unsigned_zone_answers_without_ad(resolver: DnssecResolver, do: bool) -> None:
    reply = ask(resolver, "mx.plain.test", "A", do=do)
    assert reply.rcode() == dns.rcode.NOERROR
    assert answer(reply, "mx.plain.test", "A") == ["127.0.0.6"]
    assert not reply.flags & dns.flags.AD
    assert signed_by(reply.answer, "plain.test") == set()

    mx = ask(resolver, "plain.test", "MX", do=do)
    assert answer(mx, "plain.test", "MX") == ["10 mx.plain.test."]
    assert not mx.flags & dns.flags.AD

    nodata = ask(resolver, "mx.plain.test", "TLSA", do=do)
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert not nodata.flags & dns.flags.AD


def test_bogus_zone_is_servfail(resolver: DnssecResolver) -> None:
    for name, rdtype in (("mx.bogus.test", "A"), ("_25._tcp.mx.bogus.test", "TLSA")):
        reply = ask(resolver, name, rdtype)
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert reply.answer == []
        assert not reply.flags & dns.flags.AD
        # With EDNS, Unbound says why (RFC 8914): DNSSEC Bogus.
        edns = ask(resolver, name, rdtype, do=True)
        assert edns.rcode() == dns.rcode.SERVFAIL
        assert [o.code for o in edns.options if isinstance(o, dns.edns.EDEOption)] == [
            dns.edns.EDECode.DNSSEC_BOGUS
        ]
    # The data is there, signed: only its validation fails. CD (checking disabled) gets it.
    unchecked = ask(resolver, "mx.bogus.test", "A", do=True, cd=True)
    assert unchecked.rcode() == dns.rcode.NOERROR
    assert answer(unchecked, "mx.bogus.test", "A") == ["127.0.0.7"]
    assert signed_by(unchecked.answer, "bogus.test") == {"A"}
    assert not unchecked.flags & dns.flags.AD


def test_names_outside_the_zones_fail_at_once(resolver: DnssecResolver) -> None:
    started = time.monotonic()
    refused = ask(resolver, "mx.example.com", "A")
    # Unbound's own RFC 6761 zone "test." answers the other .test names.
    unknown = ask(resolver, "other.test", "MX")
    assert time.monotonic() - started < 1.0
    assert (refused.rcode(), refused.answer) == (dns.rcode.REFUSED, [])
    assert (unknown.rcode(), unknown.answer) == (dns.rcode.NXDOMAIN, [])
    assert not (refused.flags | unknown.flags) & dns.flags.AD
