"""SPF, DKIM, ARC and DMARC evaluation and Authentication-Results rendering, against an
in-memory DNS zone (FakeResolver); keys are generated per test run."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from postmesh.common.mailauth.arc import verify_arc
from postmesh.common.mailauth.authresults import (
    MethodResult,
    Property,
    authentication_results,
    strip_forged,
)
from postmesh.common.mailauth.dkim_verify import DkimResult, signature_headers, verify_dkim
from postmesh.common.mailauth.dmarc import (
    DmarcResult,
    all_from_addresses,
    author_domain,
    author_domains,
    check_dmarc,
    parse_record,
)
from postmesh.common.mailauth.dnsclient import Answer
from postmesh.common.mailauth.dnsmemo import TransactionDns
from postmesh.common.mailauth.fakedns import FakeResolver, rsa_test_key
from postmesh.common.mailauth.spf import SpfResult, check_helo, check_spf

MESSAGE = (
    b"From: Carol <carol@example.net>\r\nTo: alice@example.org\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.net>\r\n\r\nhello\r\n"
)


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[bytes, str]:
    return rsa_test_key()


def ed25519_key() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw), base64.b64encode(pub).decode()


def sign(
    message: bytes, domain: str, selector: str, key: bytes, algo: bytes = b"rsa-sha256"
) -> bytes:
    sig = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        signature_algorithm=algo,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return bytes(sig) + message


# --- SPF --------------------------------------------------------------------------------------


async def test_spf_results_for_both_identities() -> None:
    dns = FakeResolver()
    dns.add("example.net", "TXT", ["v=spf1 ip4:192.0.2.0/24 a:relay.example.net -all"])
    dns.add("relay.example.net", "A", ["198.51.100.9"])
    dns.add("soft.example", "TXT", ["v=spf1 ~all"])
    dns.add("broken.example", "TXT", ["v=spf1 ip4:192.0.2.0/33 -all"])
    dns.add("slow.example", "TXT", [])
    dns.temperror.add("slow.example")
    dns.add("mx.example.net", "TXT", ["v=spf1 a -all"])
    dns.add("mx.example.net", "A", ["192.0.2.25"])

    async def mailfrom(ip: str, sender: str) -> str:
        return (await check_spf(dns, ip, sender, "mx.example.net")).result

    assert await mailfrom("192.0.2.7", "carol@example.net") == "pass"
    assert await mailfrom("198.51.100.9", "carol@Example.NET") == "pass"
    assert await mailfrom("203.0.113.5", "carol@example.net") == "fail"
    assert await mailfrom("203.0.113.5", "x@soft.example") == "softfail"
    assert await mailfrom("203.0.113.5", "x@broken.example") == "permerror"
    assert await mailfrom("203.0.113.5", "x@slow.example") == "temperror"
    assert await mailfrom("203.0.113.5", "x@unpublished.example") == "none"
    # The null reverse path is checked as postmaster@HELO (RFC 7208 §2.4).
    bounce = await check_spf(dns, "192.0.2.25", "", "mx.example.net")
    assert (bounce.result, bounce.identity, bounce.domain) == ("pass", "helo", "mx.example.net")
    assert (await check_helo(dns, "203.0.113.5", "mx.example.net")).result == "fail"
    assert (await check_helo(dns, "203.0.113.5", "[203.0.113.5]")).result == "none"


@pytest.mark.parametrize(
    "records",
    [
        None,  # NXDOMAIN
        [],
        ["google-site-verification=abc", "v=DMARC1; p=none"],
        ["v=spf10 -all"],
        ["V=SPF1 -all"],
        ["v=spf1"],
        ["v=spf1 -all", "v=spf1 +all"],
    ],
)
async def test_spf_none_without_pyspf_is_what_pyspf_says(
    records: list[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain without an SPF record is "none" straight from the event loop (ADR 43);
    whatever pyspf itself would answer."""
    dns = FakeResolver()
    dns.add("other.example", "A", ["192.0.2.1"])
    if records is not None:
        dns.add("d.example", "TXT", records)
    fast = await check_spf(dns, "203.0.113.5", "x@d.example", "d.example")
    fast_helo = await check_helo(dns, "203.0.113.5", "d.example")
    import postmesh.common.mailauth.spf as spf_module

    async def always_pyspf(resolver: object, domain: str) -> bool:
        return False

    monkeypatch.setattr(spf_module, "_publishes_no_spf", always_pyspf)
    assert fast == await check_spf(dns, "203.0.113.5", "x@d.example", "d.example")
    assert fast_helo == await check_helo(dns, "203.0.113.5", "d.example")


class KeepingResolver(FakeResolver):
    """A FakeResolver that, like DnsClient, also answers without waiting: every name but those
    in ``not_kept`` (and the failing ones) as if its answer were in the cache."""

    def __init__(self, not_kept: set[str] | None = None) -> None:
        super().__init__()
        self.not_kept = not_kept or set()

    def kept(self, name: str, rdtype: str) -> Answer | None:
        key = name.lower().rstrip(".")
        if key in self.not_kept or key in self.temperror:
            return None
        if (key, rdtype.upper()) in self.records:
            return Answer(list(self.records[(key, rdtype.upper())]))
        exists = any(n == key or n.endswith("." + key) for n, _ in self.records)
        return Answer([], nxdomain=not exists)


def _zone(dns: FakeResolver) -> None:
    dns.add("example.net", "TXT", ["v=spf1 ip4:192.0.2.0/24 a:relay.example.net -all"])
    dns.add("relay.example.net", "A", ["198.51.100.9"])
    dns.add("soft.example", "TXT", ["v=spf1 ~all"])
    dns.add("broken.example", "TXT", ["v=spf1 ip4:192.0.2.0/33 -all"])
    dns.add("slow.example", "TXT", ["v=spf1 include:slower.example -all"])
    dns.temperror.add("slower.example")
    dns.add("chain.example", "TXT", ["v=spf1 include:example.net mx ?all"])
    dns.add("chain.example", "MX", ["10 mx.chain.example"])
    dns.add("mx.chain.example", "A", ["203.0.113.77"])
    dns.add("explained.example", "TXT", ["v=spf1 -all exp=why.explained.example"])
    dns.add("why.explained.example", "TXT", ["%{i} may not send for %{d}"])
    dns.add("macro.example", "TXT", ["v=spf1 exists:%{l}.%{i}.ok.macro.example -all"])
    dns.add("carol.192.0.2.7.ok.macro.example", "A", ["127.0.0.2"])


# (ip, sender, needs a name outside NOT_KEPT, needs one that fails: a worker thread always)
SPF_CASES = [
    ("192.0.2.7", "carol@example.net", False, False),  # ip4 matches before a:relay
    ("198.51.100.9", "carol@Example.NET", True, False),
    ("203.0.113.5", "carol@example.net", True, False),
    ("203.0.113.5", "x@soft.example", False, False),
    ("203.0.113.5", "x@broken.example", False, False),
    ("203.0.113.5", "x@slow.example", False, True),
    ("192.0.2.8", "x@chain.example", False, False),
    ("203.0.113.77", "x@chain.example", True, False),
    ("203.0.113.9", "x@chain.example", True, False),
    ("203.0.113.5", "x@explained.example", True, False),  # exp= (pyspf swallows its errors)
    ("192.0.2.7", "carol@macro.example", False, False),
    ("192.0.2.7", "dave@macro.example", False, False),
    ("192.0.2.25", "", False, False),  # postmaster@HELO
]
NOT_KEPT = {"relay.example.net", "mx.chain.example", "why.explained.example"}


@pytest.mark.parametrize(("ip", "sender", "uses_not_kept", "fails"), SPF_CASES)
async def test_spf_from_kept_answers_is_what_the_worker_thread_says(
    ip: str, sender: str, uses_not_kept: bool, fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check answered on the event loop from kept answers (ADR 79) gives the worker thread's
    result and explanation, and uses the thread only when an answer is not kept."""
    import postmesh.common.mailauth.spf as spf_module

    threaded = FakeResolver()
    _zone(threaded)
    threaded.add("mx.example.net", "A", ["192.0.2.25"])
    threaded.add("mx.example.net", "TXT", ["v=spf1 a -all"])
    expected = await check_spf(threaded, ip, sender, "mx.example.net")

    runs: list[str] = []
    thread_run = spf_module._run

    def counted(*args: object) -> tuple[str, str]:
        runs.append(str(args[3]))
        return thread_run(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(spf_module, "_run", counted)
    for not_kept in (set(), NOT_KEPT):
        keeping = KeepingResolver(not_kept)
        _zone(keeping)
        keeping.add("mx.example.net", "A", ["192.0.2.25"])
        keeping.add("mx.example.net", "TXT", ["v=spf1 a -all"])
        runs.clear()
        assert await check_spf(keeping, ip, sender, "mx.example.net") == expected
        # Only a question the cache cannot answer sends the check to the worker thread.
        threaded_now = fails or (uses_not_kept and bool(not_kept))
        assert runs == ([sender or "postmaster@mx.example.net"] if threaded_now else [])


async def test_spf_from_the_transactions_answers() -> None:
    """Within one transaction, an answer already had (the TXT record the edge asked first) is
    kept for the check on the loop, whatever its TTL; a question in flight is not."""
    dns = FakeResolver()
    dns.add("example.org", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])
    memo = TransactionDns(dns)
    assert memo.kept("example.org", "TXT") is None
    await memo.query("example.org", "TXT")
    assert memo.kept("Example.ORG.", "txt") == Answer(["v=spf1 ip4:192.0.2.0/24 -all"])
    result = await check_spf(memo, "192.0.2.1", "a@example.org", "mx.example.org")
    assert result.result == "pass"
    assert dns.queries == [("example.org", "TXT")]  # asked once, by the memo


# --- DKIM -------------------------------------------------------------------------------------


async def test_dkim_every_signature_rsa_and_ed25519(rsa_pair: tuple[bytes, str]) -> None:
    pem, pub = rsa_pair
    ed_priv, ed_pub = ed25519_key()
    dns = FakeResolver()
    dns.add("rsa._domainkey.example.net", "TXT", [f"v=DKIM1; k=rsa; p={pub}"])
    dns.add("ed._domainkey.example.net", "TXT", [f"v=DKIM1; k=ed25519; p={ed_pub}"])
    signed = sign(MESSAGE, "example.net", "rsa", pem)
    signed = sign(signed, "example.net", "ed", ed_priv, b"ed25519-sha256")
    signed = sign(signed, "example.net", "gone", pem)  # no key published
    results = await verify_dkim(dns, signed)
    assert [(r.result, r.selector) for r in results] == [
        ("permerror", "gone"),
        ("pass", "ed"),
        ("pass", "rsa"),
    ]
    assert results[1].domain == "example.net" and len(results[1].b) == 8
    tampered = signed.replace(b"hello", b"hullo")
    assert [r.result for r in await verify_dkim(dns, tampered)] == ["permerror", "fail", "fail"]
    dns.temperror.add("rsa._domainkey.example.net")
    assert (await verify_dkim(dns, signed))[2].result == "temperror"
    assert await verify_dkim(dns, MESSAGE) == []


@pytest.mark.parametrize(
    "message",
    [
        b"DKIM-Signature: a=1\r\nFrom: x\r\n\r\nDKIM-Signature: body\r\n",
        b"DKIM-Signature: a=1\nFrom: x\n\nDKIM-Signature: body\n",  # LF only
        b"DKIM-Signature: a=1\r\n b=2\r\nFrom: x\n\r\nDKIM-Signature: body\r\n",
        b"\r\nDKIM-Signature: in the body\r\n",  # no header section
        b"DKIM-Signature: a=1\r\nDKIM-Signature: b=2\r\n",  # no body
        b"DKIM-Signature: a=1\r\n\x00bad\r\n\r\nbody\r\n",  # unparseable header
    ],
)
def test_signature_headers_read_the_header_section_as_dkimpy_does(message: bytes) -> None:
    """Only the header section is parsed (the body can be large); the fields found are those
    of dkimpy's parser on the whole message."""
    try:
        expected = [v for n, v in dkim.rfc822_parse(message)[0] if n.lower() == b"dkim-signature"]
    except dkim.DKIMException:
        expected = []
    assert signature_headers(message, (b"dkim-signature",)) == expected
    big = message + b"DKIM-Signature: c=3\r\n" * 10_000
    if b"\n\n" in message or b"\n\r\n" in message:
        assert signature_headers(big, (b"dkim-signature",)) == expected


# --- ARC --------------------------------------------------------------------------------------


async def test_arc_chain(rsa_pair: tuple[bytes, str]) -> None:
    pem, pub = rsa_pair
    dns = FakeResolver()
    dns.add("arc._domainkey.forwarder.example", "TXT", [f"v=DKIM1; k=rsa; p={pub}"])
    assert (await verify_arc(dns, MESSAGE)).result == "none"
    with_ar = b"Authentication-Results: forwarder.example; spf=pass\r\n" + MESSAGE
    arc_set = dkim.arc_sign(with_ar, b"arc", b"forwarder.example", pem, b"forwarder.example")
    sealed = b"".join(arc_set) + with_ar
    result = await verify_arc(dns, sealed)
    assert (result.result, result.instances) == ("pass", 1)
    assert (await verify_arc(dns, sealed.replace(b"hello", b"hullo"))).result == "fail"
    dns.temperror.add("arc._domainkey.forwarder.example")
    assert (await verify_arc(dns, sealed)).result == "temperror"


@pytest.mark.parametrize("lines", [1, 4_000])  # ~40 bytes and ~160 KiB of body
async def test_dkim_and_arc_on_the_loop_and_in_a_thread_agree(
    rsa_pair: tuple[bytes, str], lines: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose size times its signatures is up to INLINE_BYTES is verified on the
    event loop, a larger one in a worker thread (ADR 79); either way a signature or seal
    passes, and fails once the body changes."""
    import postmesh.common.mailauth.dkim_verify as dkim_module

    pem, pub = rsa_pair
    dns = FakeResolver()
    dns.add("sel._domainkey.example.net", "TXT", [f"v=DKIM1; k=rsa; p={pub}"])
    dns.add("arc._domainkey.forwarder.example", "TXT", [f"v=DKIM1; k=rsa; p={pub}"])
    message = MESSAGE + b"a line of the body, the same each time\r\n" * lines
    signed = sign(message, "example.net", "sel", pem)
    with_ar = b"Authentication-Results: forwarder.example; spf=pass\r\n" + signed
    sealed = (
        b"".join(dkim.arc_sign(with_ar, b"arc", b"forwarder.example", pem, b"forwarder.example"))
        + with_ar
    )
    threads: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Callable[..., object], /, *args: object) -> object:
        threads.append(func.__name__)
        return await to_thread(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    assert [r.result for r in await verify_dkim(dns, sealed)] == ["pass"]
    assert (await verify_arc(dns, sealed)).result == "pass"
    tampered = sealed.replace(b"the same each time", b"changed this time", 1)
    assert [r.result for r in await verify_dkim(dns, tampered)] == ["fail"]
    assert (await verify_arc(dns, tampered)).result == "fail"
    large = len(sealed) > dkim_module.INLINE_BYTES  # one signature; two ARC fields, as large
    assert large == (lines > 1)
    assert threads == (["_verify_one", "_validate"] * 2 if large else [])


# --- DMARC ------------------------------------------------------------------------------------


def test_dmarc_record_parsing() -> None:
    r = parse_record("v=DMARC1; p=Reject; sp=quarantine; adkim=s; pct=50; rua=mailto:x@y")
    assert r is not None and (r.p, r.sp, r.adkim, r.aspf, r.pct) == (
        "reject",
        "quarantine",
        "s",
        "r",
        50,
    )
    assert parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert parse_record("v=DMARC1; p=bogus") is None
    only_rua = parse_record("v=DMARC1; rua=mailto:x@y")
    assert only_rua is not None and only_rua.p == "none"
    defaults = parse_record("v=DMARC1; p=quarantine; pct=xx")
    assert defaults is not None and (defaults.sp, defaults.pct) == ("quarantine", 100)


def test_author_domain() -> None:
    assert author_domain(MESSAGE) == "example.net"
    folded = b'From: "A, B"\r\n <a@Sub.Example.COM>\r\nSubject: x\r\n\r\nb\r\n'
    assert author_domain(folded) == "sub.example.com"
    with pytest.raises(ValueError):
        author_domain(b"From: a@x.example\r\nFrom: b@y.example\r\n\r\nb\r\n")
    with pytest.raises(ValueError):
        author_domain(b"From: a@x.example, b@y.example\r\n\r\nb\r\n")
    with pytest.raises(ValueError):
        author_domain(b"Subject: no from\r\n\r\nb\r\n")


def _spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "mailfrom", domain)


def _dkim(result: str, domain: str) -> list[DkimResult]:
    return [DkimResult(result, domain, "s")]


async def test_dmarc_alignment_policies_and_pct() -> None:
    dns = FakeResolver()
    dns.add("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject; sp=quarantine"])
    dns.add("_dmarc.strict.example", "TXT", ["v=DMARC1; p=reject; adkim=s; aspf=s"])
    dns.add("_dmarc.half.example", "TXT", ["v=DMARC1; p=reject; pct=50"])
    dns.add("_dmarc.two.example", "TXT", ["v=DMARC1; p=reject", "v=DMARC1; p=none"])
    dns.add("_dmarc.slow.example", "TXT", [])
    dns.temperror.add("_dmarc.slow.example")

    def msg(domain: str) -> bytes:
        return MESSAGE.replace(b"example.net>", domain.encode() + b">", 1)

    async def run(
        domain: str, spf: SpfResult | None, dk: list[DkimResult], roll: float = 0.0
    ) -> DmarcResult:
        return await check_dmarc(dns, msg(domain), spf, dk, sample=lambda: roll)

    # Relaxed: an aligned SPF or DKIM pass from any name under the organizational domain.
    r = await run("example.net", _spf("pass", "bounces.example.net"), [])
    assert (r.result, r.policy, r.disposition) == ("pass", "reject", "none")
    r = await run("example.net", _spf("fail", "example.net"), _dkim("pass", "mail.example.net"))
    assert r.result == "pass"
    # Neither aligned: fail with p=reject; a subdomain gets sp= from the org record.
    r = await run("example.net", _spf("pass", "other.example"), _dkim("pass", "other.example"))
    assert (r.result, r.disposition, r.policy_domain) == ("fail", "reject", "example.net")
    r = await run("news.example.net", None, _dkim("fail", "example.net"))
    assert (r.result, r.policy, r.disposition) == ("fail", "quarantine", "quarantine")
    assert r.policy_domain == "example.net"
    # Strict: the exact name only.
    r = await run("strict.example", _spf("pass", "mail.strict.example"), [])
    assert r.result == "fail"
    r = await run("strict.example", None, _dkim("pass", "strict.example"))
    assert r.result == "pass"
    # pct=50: sampled out, reject becomes quarantine (RFC 7489 §6.6.4).
    assert (await run("half.example", None, [], roll=0.2)).disposition == "reject"
    assert (await run("half.example", None, [], roll=0.7)).disposition == "quarantine"
    assert (await run("two.example", None, [])).result == "none"
    assert (await run("none.example", None, [])).result == "none"
    assert (await run("slow.example", None, [])).result == "temperror"
    bad = await check_dmarc(dns, b"Subject: x\r\n\r\nb\r\n", None, [])
    assert bad.result == "permerror"


def test_author_domains_of_every_from_field() -> None:
    two_fields = b"From: a@X.example\r\nSubject: s\r\nFrom: b@y.example, c@x.example\r\n\r\nb\r\n"
    assert all_from_addresses(two_fields) == ["a@X.example", "b@y.example", "c@x.example"]
    assert author_domains(two_fields) == ["x.example", "y.example"]
    assert author_domains(b"From: <>, nobody\r\n\r\nb\r\n") == []
    assert author_domains(b"Subject: no from\r\n\r\nb\r\n") == []


async def test_dmarc_of_several_author_domains_applies_the_strictest_failure() -> None:
    """RFC 7489 §6.6.1: each author domain is checked and the most strict policy among the
    failures applies, so a second From field or address cannot hide a p=reject domain."""
    dns = FakeResolver()
    dns.add("_dmarc.victim.example", "TXT", ["v=DMARC1; p=reject"])
    dns.add("_dmarc.soft.example", "TXT", ["v=DMARC1; p=quarantine"])
    dns.add("_dmarc.own.example", "TXT", ["v=DMARC1; p=none"])
    dns.add("_dmarc.slow.example", "TXT", [])
    dns.temperror.add("_dmarc.slow.example")
    spf = _spf("pass", "own.example")

    async def run(*froms: bytes) -> DmarcResult:
        head = b"".join(b"From: " + f + b"\r\n" for f in froms)
        return await check_dmarc(dns, head + b"Subject: x\r\n\r\nb\r\n", spf, [])

    for froms in (
        (b"ceo@victim.example", b"me@own.example"),
        (b"me@own.example", b"ceo@victim.example"),
        (b"me@own.example, ceo@victim.example",),
        (b"x@soft.example", b"ceo@victim.example"),
    ):
        r = await run(*froms)
        assert (r.result, r.disposition, r.header_from) == ("fail", "reject", "victim.example")
    r = await run(b"x@soft.example", b"me@own.example")
    assert (r.result, r.disposition) == ("fail", "quarantine")
    assert (await run(b"me@own.example", b"other@own.example")).result == "pass"
    assert (await run(b"me@own.example", b"x@slow.example")).result == "temperror"


# --- Authentication-Results ---------------------------------------------------------------------


def test_authentication_results_rendering() -> None:
    header = authentication_results(
        "mx.example.org",
        [
            MethodResult("spf", "pass", [Property("smtp", "mailfrom", "carol@example.net")]),
            MethodResult(
                "dkim",
                "fail",
                [Property("header", "d", "example.net"), Property("header", "b", "ab/+c=d1")],
                reason="signature did not verify",
            ),
            MethodResult(
                "dmarc",
                "fail",
                [Property("header", "from", "example.net")],
                comment="p=reject dis=reject",
            ),
            MethodResult("spf", "none", [Property("smtp", "helo", 'evil"\x01 (name)')]),
        ],
    )
    assert header == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=carol@example.net;\r\n"
        b'\tdkim=fail reason="signature did not verify" header.d=example.net header.b="ab/+c=d1";\r\n'
        b"\tdmarc=fail (p=reject dis=reject) header.from=example.net;\r\n"
        b'\tspf=none smtp.helo="evil\\"? (name)"\r\n'
    )
    assert authentication_results("mx.example.org", []) == (
        b"Authentication-Results: mx.example.org; none\r\n"
    )


def test_forged_authentication_results_are_stripped() -> None:
    message = (
        b"Authentication-Results: MX.Example.Org (the real one, honest);\r\n\tdmarc=pass\r\n"
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"Subject: x\r\n"
        b"authentication-results:mx.example.org;dkim=pass\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; body text stays\r\n"
    )
    stripped, removed = strip_forged(message, "mx.example.org")
    assert removed == 2
    assert stripped == (
        b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n"
        b"Authentication-Results: mx.example.org; body text stays\r\n"
    )
    assert strip_forged(MESSAGE, "mx.example.org") == (MESSAGE, 0)
