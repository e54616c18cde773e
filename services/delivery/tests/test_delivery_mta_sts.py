from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest
from delivery_fakes import FakeResolver, FakeSmtp, timeout

from postmesh.common.tls import ensure_dev_certificate
from postmesh.delivery import mta_sts
from postmesh.delivery.model import Outcome
from postmesh.delivery.mta_sts import MtaSts, Policy, PolicyError, parse_policy, parse_txt
from postmesh.delivery.relay import Relay
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import Envelope, Rcpt

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx2.remote.test\r\nmx: *.backup.test\r\nmax_age: 86400\r\n"


def test_policy_parsing() -> None:
    p = parse_policy(POLICY, "id1")
    assert (p.mode, p.mx, p.max_age, p.id) == (
        "enforce", ("mx2.remote.test", "*.backup.test"), 86400, "id1",
    )  # fmt: skip
    assert p.allows("MX2.remote.test.") and p.allows("a.backup.test")
    # RFC 8461 §4.1: "*." matches exactly one label.
    assert not p.allows("a.b.backup.test") and not p.allows("backup.test")
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 99999999999\n").max_age == 31557600
    for bad in ("mode: enforce\nmx: a\nmax_age: 1\n", "version: STSv1\nmode: x\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmax_age: 1\n", "version: STSv1\nmode: testing\nmx: a\n",
                "garbage"):  # fmt: skip
        with pytest.raises(PolicyError):
            parse_policy(bad)


def test_txt_record() -> None:
    assert parse_txt(["v=STSv1; id=20260101T000000;"]) == "20260101T000000"
    assert parse_txt(["v=spf1 -all"]) is None
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # not exactly one
    assert parse_txt(["v=STSv1; id=bad-id!"]) is None


async def test_policy_is_cached_by_id_and_survives_dns_failure(monkeypatch: Any) -> None:
    dns_ = FakeResolver()
    dns_.add("_mta-sts.remote.test", "TXT", '"v=STSv1; id=one"')
    sts = MtaSts(dns_)  # type: ignore[arg-type]
    fetched: list[str] = []

    async def fetch(domain: str) -> str:
        fetched.append(domain)
        return POLICY

    monkeypatch.setattr(sts, "_fetch", fetch)
    p = await sts.policy("remote.test")
    assert p is not None and p.enforce and p.id == "one"
    assert await sts.policy("remote.test") == p and fetched == ["remote.test"]
    dns_.zone[("_mta-sts.remote.test", "TXT")] = timeout()
    assert await sts.policy("remote.test") == p  # RFC 8461 §5.1: the cached one stays
    dns_.add("_mta-sts.remote.test", "TXT", '"v=STSv1; id=two"')
    assert (await sts.policy("remote.test")).id == "two"  # type: ignore[union-attr]
    assert len(fetched) == 2
    assert await sts.policy("nopolicy.test") is None


class FixedPolicy:
    def __init__(self, policy: Policy) -> None:
        self.p = policy

    async def policy(self, domain: str) -> Policy:
        return self.p


def zone() -> FakeResolver:
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.", "20 mx2.remote.test.")
    dns_.add("mx1.remote.test", "A", "127.0.0.1")
    dns_.add("mx2.remote.test", "A", "127.0.0.1")
    return dns_


async def test_enforce_skips_unlisted_mx_and_requires_starttls() -> None:
    peer = await FakeSmtp().start()  # no STARTTLS offered
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test")
    relay = Relay(settings, zone(), FixedPolicy(parse_policy(POLICY)))  # type: ignore[arg-type]
    [r] = await relay.deliver(
        "remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], b"x\r\n"
    )
    assert r.outcome is Outcome.DEFERRED and r.status == "4.7.5"
    assert "STARTTLS" in r.diagnostic
    assert peer.connections == 1  # only mx2: mx1 is not in the policy
    assert peer.transactions == []
    await peer.stop()


async def test_testing_mode_delivers_without_tls() -> None:
    peer = await FakeSmtp().start()
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test")
    testing = parse_policy(POLICY.replace("enforce", "testing"))
    relay = Relay(settings, zone(), FixedPolicy(testing))  # type: ignore[arg-type]
    [r] = await relay.deliver(
        "remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], b"x\r\n"
    )
    assert r.outcome is Outcome.RELAYED and r.remote_mta == "mx1.remote.test"
    await relay.cache.close_all()
    await peer.stop()


async def test_size_limit_of_the_peer_bounces_before_data() -> None:
    peer = await FakeSmtp(extensions=("SIZE 100", "8BITMIME")).start()
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test", mta_sts=False)
    relay = Relay(settings, zone(), None)  # type: ignore[arg-type]
    body = b"x" * 200 + b"\r\n"
    [r] = await relay.deliver("remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], body)
    assert (r.outcome, r.reply_code, r.status) == (Outcome.BOUNCED, "552", "5.3.4")
    assert peer.transactions == [] and relay._limits == {}
    await relay.cache.close_all()
    await peer.stop()


def tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for ``name``, and that certificate as
    the CA file the client trusts."""
    cert, key = ensure_dev_certificate(tmp_path / name, hostname=name)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, str(cert)


async def test_opportunistic_starttls_without_a_policy(tmp_path: Path) -> None:
    server, _ = tls_pair(tmp_path, "whatever.invalid")  # not verified without a policy
    peer = await FakeSmtp(tls=server).start()
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test", mta_sts=False)
    relay = Relay(settings, zone(), None)  # type: ignore[arg-type]
    [r] = await relay.deliver(
        "remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], b"x\r\n"
    )
    assert r.outcome is Outcome.RELAYED and peer.tls_sessions == 1
    await relay.cache.close_all()
    await peer.stop()


@pytest.mark.parametrize(
    ("cert_name", "relayed"), [("mx2.remote.test", True), ("other.test", False)]
)
async def test_enforce_verifies_the_mx_certificate_name(
    tmp_path: Path, cert_name: str, relayed: bool
) -> None:
    server, ca = tls_pair(tmp_path, cert_name)
    peer = await FakeSmtp(tls=server).start()
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test", relay_ca_file=Path(ca))
    relay = Relay(settings, zone(), FixedPolicy(parse_policy(POLICY)))  # type: ignore[arg-type]
    [r] = await relay.deliver(
        "remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], b"x\r\n"
    )
    if relayed:
        assert r.outcome is Outcome.RELAYED and r.remote_mta == "mx2.remote.test"
        assert len(peer.transactions) == 1
    else:
        # RFC 8461 §5: a certificate not valid for the MX name is a temporary failure; no
        # fallback to plaintext.
        assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.7.5")
        assert peer.transactions == []
    await relay.cache.close_all()
    await peer.stop()


async def test_no_policy_is_remembered_for_the_negative_ttl(monkeypatch: Any) -> None:
    """RFC 8461 §5.1: no TXT record means no policy; that answer is reused (no look-up) for
    its negative TTL within [ABSENT_MIN_SECONDS, ABSENT_MAX_SECONDS]. A failed look-up is not
    an answer and is not remembered."""
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.")
    sts = MtaSts(dns_)  # type: ignore[arg-type]
    now = [1000.0]
    monkeypatch.setattr(mta_sts.time, "time", lambda: now[0])
    assert await sts.policy("remote.test") is None
    assert await sts.policy("Remote.Test.") is None
    assert dns_.queries.count(("_mta-sts.remote.test", "TXT")) == 1
    # The fake's NXDOMAIN carries no reply, so no SOA: dnspython's default of 300 s.
    now[0] += mta_sts.ABSENT_WITHOUT_SOA_SECONDS - 1
    assert await sts.policy("remote.test") is None
    assert dns_.queries.count(("_mta-sts.remote.test", "TXT")) == 1
    now[0] += 2  # expired: the domain may have published a policy since
    dns_.add("_mta-sts.remote.test", "TXT", '"v=STSv1; id=one"')
    monkeypatch.setattr(sts, "_fetch", _serve(POLICY))
    p = await sts.policy("remote.test")
    assert p is not None and p.id == "one"
    assert dns_.queries.count(("_mta-sts.remote.test", "TXT")) == 2
    # A timeout is no answer: asked again next time.
    dns_.zone[("_mta-sts.down.test", "TXT")] = timeout()
    assert await sts.policy("down.test") is None and await sts.policy("down.test") is None
    assert dns_.queries.count(("_mta-sts.down.test", "TXT")) == 2


def test_negative_ttl_is_the_soa_minimum_within_bounds() -> None:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM); no SOA: 300 s; then clamped."""
    reply = dns.message.make_response(dns.message.make_query("_mta-sts.a.test", "TXT"))
    assert mta_sts.negative_ttl(reply) == mta_sts.ABSENT_WITHOUT_SOA_SECONDS
    assert mta_sts.negative_ttl(None) == mta_sts.ABSENT_WITHOUT_SOA_SECONDS
    soa = "ns.a.test. host.a.test. 1 3600 600 86400 {}"
    for ttl, minimum, want in ((900, 120, 120.0), (30, 600, 30.0)):
        reply.authority = [dns.rrset.from_text("a.test.", ttl, "IN", "SOA", soa.format(minimum))]
        assert mta_sts.negative_ttl(reply) == want
    assert mta_sts.absent_for(0) == mta_sts.ABSENT_MIN_SECONDS
    assert mta_sts.absent_for(120) == 120
    assert mta_sts.absent_for(86400) == mta_sts.ABSENT_MAX_SECONDS


def _serve(text: str) -> Any:
    async def fetch(domain: str) -> str:
        return text

    return fetch
