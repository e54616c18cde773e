"""RFC 8689 on the sending side, against a scripted peer on loopback: REQUIRETLS messages go only
over verified TLS to a validated MX that offers REQUIRETLS (else 5.7.30 / 5.7.10), their reports
carry headers only, and "TLS-Required: No" relaxes MTA-STS enforcement."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from delivery_fakes import FakeResolver, FakeSmtp, tls_pair

from postmesh.api.events.v1 import events_pb2
from postmesh.delivery.dsn import build_dsn
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.mta_sts import Policy, parse_policy
from postmesh.delivery.relay import Relay
from postmesh.delivery.requiretls import TlsPolicy, tls_policy, tls_required_no
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import Envelope, Rcpt, SmtpSession

BODY = b"From: a@x.test\r\nTo: b@remote.test\r\nSubject: secret\r\n\r\nthe body\r\n"
TLS_NO = b"TLS-Required: No\r\n" + BODY
MX_NAMES = ("mx1.remote.test", "mx2.remote.test")
SECURE = Envelope("a@x.test", requiretls=True)


def policy(mode: str = "testing", mx: str = "*.remote.test") -> Policy:
    return parse_policy(f"version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n", "id1")


class FixedPolicy:
    def __init__(self, p: Policy | None) -> None:
        self.p = p

    async def policy(self, domain: str) -> Policy | None:
        return self.p


def zone() -> FakeResolver:
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.", "20 mx2.remote.test.")
    dns_.add("mx1.remote.test", "A", "127.0.0.1")
    dns_.add("mx2.remote.test", "A", "127.0.0.1")
    return dns_


async def start_peer(tmp_path: Path, *names: str, **kw: Any) -> tuple[FakeSmtp, str]:
    server, ca = tls_pair(tmp_path / "peer", *(names or MX_NAMES))
    return await FakeSmtp(tls=server, **kw).start(), ca


def relay(peer: FakeSmtp, ca: str, sts: Policy | None, **kw: Any) -> Relay:
    settings = DeliverySettings(
        smtp_port=peer.port, hostname="out.test", relay_ca_file=Path(ca), **kw
    )
    return Relay(settings, zone(), FixedPolicy(sts))  # type: ignore[arg-type]


async def one(r: Relay, env: Envelope, content: bytes = BODY) -> RecipientResult:
    [res] = await r.deliver("remote.test", env, [Rcpt("b@remote.test")], content)
    await r.cache.close_all()
    return res


def test_tls_required_header() -> None:
    assert tls_required_no(TLS_NO)
    assert tls_required_no(b"Subject: x\r\ntls-required:   NO \r\n\r\nbody\r\n")
    assert tls_required_no(b"Subject: x\r\nTLS-Required:\r\n No\r\n\r\n")  # folded
    assert not tls_required_no(b"TLS-Required: Yes\r\n\r\n")
    assert not tls_required_no(b"X-TLS-Required: No\r\n\r\n")
    assert not tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n")  # body, not header
    # RFC 8689 §4.1: with the MAIL FROM parameter the header field is ignored.
    assert tls_policy(True, TLS_NO) is TlsPolicy.REQUIRETLS
    assert tls_policy(False, TLS_NO) is TlsPolicy.TLS_OPTIONAL
    assert tls_policy(False, BODY) is TlsPolicy.DEFAULT


async def test_relayed_with_requiretls_over_verified_tls(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path, tls_extensions=("REQUIRETLS",))
    r = await one(relay(peer, ca, policy()), SECURE)
    assert (r.outcome, r.remote_mta) == (Outcome.RELAYED, "mx1.remote.test")
    [tx] = peer.transactions
    assert tx.tls and tx.mail.rstrip().endswith(b" REQUIRETLS")
    await peer.stop()


async def test_peer_without_requiretls_bounces_5_7_30_after_every_mx(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path)  # verified TLS, but no REQUIRETLS after STARTTLS
    r = await one(relay(peer, ca, policy()), SECURE)
    assert (r.outcome, r.reply_code, r.status) == (Outcome.BOUNCED, "550", "5.7.30")
    assert "REQUIRETLS support required" in r.diagnostic
    assert peer.tls_sessions == 2 and peer.transactions == []  # both MX hosts tried
    # The same peer still takes ordinary mail (opportunistic TLS), unchanged.
    r = await one(relay(peer, ca, policy()), Envelope("a@x.test"))
    assert r.outcome is Outcome.RELAYED
    assert b"REQUIRETLS" not in peer.transactions[0].mail
    await peer.stop()


@pytest.mark.parametrize("case", ["no_starttls", "wrong_certificate"])
async def test_no_verified_tls_bounces_5_7_10(tmp_path: Path, case: str) -> None:
    if case == "no_starttls":
        _, ca = tls_pair(tmp_path / "ca", *MX_NAMES)
        peer = await FakeSmtp(extensions=("REQUIRETLS", "DSN")).start()
    else:
        peer, ca = await start_peer(tmp_path, "other.test", tls_extensions=("REQUIRETLS",))
    r = await one(relay(peer, ca, policy()), SECURE)
    assert (r.outcome, r.reply_code, r.status) == (Outcome.BOUNCED, "550", "5.7.10")
    assert peer.transactions == [] and peer.connections == 2
    await peer.stop()


@pytest.mark.parametrize("sts", [None, "none", "listed_elsewhere"])
async def test_mx_must_be_validated_by_mta_sts(tmp_path: Path, sts: str | None) -> None:
    """RFC 8689 §4.2.1 step 2: no DNSSEC here, so an MX from DNS needs an MTA-STS policy that
    names it; without one no connection is even made."""
    peer, ca = await start_peer(tmp_path, tls_extensions=("REQUIRETLS",))
    p = {None: None, "none": policy("none"), "listed_elsewhere": policy(mx="mx.other.test")}[sts]
    r = await one(relay(peer, ca, p), SECURE)
    assert (r.outcome, r.status) == (Outcome.BOUNCED, "5.7.10")
    assert "not validated by an MTA-STS policy" in r.diagnostic
    assert peer.connections == 0
    await peer.stop()


async def test_only_the_listed_mx_is_used_and_enforce_mode_counts_too(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path, tls_extensions=("REQUIRETLS",))
    r = await one(relay(peer, ca, policy("enforce", "mx2.remote.test")), SECURE)
    assert (r.outcome, r.remote_mta) == (Outcome.RELAYED, "mx2.remote.test")
    assert peer.connections == 1
    await peer.stop()


async def test_operator_route_needs_no_mta_sts_but_a_verified_name(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path, "relay.ops.test", tls_extensions=("REQUIRETLS",))
    r = relay(peer, ca, None, transport_map=f"remote.test=[relay.ops.test]:{peer.port}")
    r.resolver.add("relay.ops.test", "A", "127.0.0.1")  # type: ignore[attr-defined]
    res = await one(r, SECURE)
    assert (res.outcome, res.remote_mta) == (Outcome.RELAYED, "relay.ops.test")
    assert peer.transactions[0].mail.rstrip().endswith(b"REQUIRETLS")
    await peer.stop()


async def test_an_unreachable_mx_defers_instead_of_bouncing(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path)  # mx2: reached, no REQUIRETLS
    rl = relay(peer, ca, policy())
    rl.resolver.add("mx1.remote.test", "A", "127.0.0.9")  # type: ignore[attr-defined]
    r = await one(rl, SECURE)
    # mx1 may qualify once it is up again: a temporary failure, not a 5.7.30 bounce yet.
    assert r.outcome is Outcome.DEFERRED and r.reply_code.startswith("4")
    await peer.stop()


async def test_a_report_goes_without_requiretls_when_no_host_offers_it(tmp_path: Path) -> None:
    """RFC 8689 §5: a non-delivery report (null reverse path) about a REQUIRETLS message is not
    discarded for want of REQUIRETLS; it goes with it when the peer qualifies."""
    peer, ca = await start_peer(tmp_path)
    report = Envelope("", requiretls=True)
    r = await one(relay(peer, ca, None), report)
    assert r.outcome is Outcome.RELAYED
    assert b"REQUIRETLS" not in peer.transactions[-1].mail
    await peer.stop()
    capable, ca = await start_peer(tmp_path, tls_extensions=("REQUIRETLS",))
    r = await one(relay(capable, ca, policy()), report)
    assert r.outcome is Outcome.RELAYED
    assert capable.transactions[-1].mail == b"MAIL FROM:<> SIZE=%d REQUIRETLS\r\n" % len(BODY)
    await capable.stop()


async def test_tls_required_no_relaxes_mta_sts_enforce(tmp_path: Path) -> None:
    peer = await FakeSmtp().start()  # no STARTTLS at all
    _, ca = tls_pair(tmp_path / "ca", *MX_NAMES)
    enforce = policy("enforce", "mx2.remote.test")
    r = await one(relay(peer, ca, enforce), Envelope("a@x.test"))
    assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.7.5")  # enforced as before
    r = await one(relay(peer, ca, enforce), Envelope("a@x.test"), TLS_NO)
    # RFC 8689 §4.2.2: delivered anyway, to the first MX, listed or not.
    assert (r.outcome, r.remote_mta) == (Outcome.RELAYED, "mx1.remote.test")
    # REQUIRETLS wins over the header: no delivery without verified TLS.
    r = await one(relay(peer, ca, enforce), SECURE, TLS_NO)
    assert (r.outcome, r.status) == (Outcome.BOUNCED, "5.7.10")
    assert len(peer.transactions) == 1
    await peer.stop()


async def test_tls_required_no_still_uses_starttls_when_offered(tmp_path: Path) -> None:
    peer, ca = await start_peer(tmp_path, "whatever.invalid")
    r = await one(relay(peer, ca, policy("enforce")), Envelope("a@x.test"), TLS_NO)
    assert r.outcome is Outcome.RELAYED and peer.transactions[0].tls
    await peer.stop()


async def test_session_never_sends_requiretls_unverified(tmp_path: Path) -> None:
    peer, _ = await start_peer(tmp_path, tls_extensions=("REQUIRETLS",))
    s = SmtpSession("mx1.remote.test", "127.0.0.1", peer.port, "out.test", 5, 5)
    await s.open()  # opportunistic: TLS, but the certificate was not checked
    assert s.tls and not s.verified and not s.requiretls_ready
    [reply] = (await s.send(SECURE, [Rcpt("b@remote.test")], BODY)).values()
    assert (reply.code, reply.status) == (550, "5.7.30")
    assert not any(c.startswith(b"MAIL") for c in peer.commands)
    await s.close()
    await peer.stop()


def test_report_on_a_requiretls_message_has_headers_only_and_requiretls() -> None:
    msg = events_pb2.InboundMessage(
        queue_id="0123456789ABCDEFGHJK", mail_from="a@x.test", ret="FULL", requiretls=True,
        recipients=[events_pb2.Recipient(address="b@remote.test")], inline_content=BODY,
    )  # fmt: skip
    fail = RecipientResult(
        "b@remote.test", Outcome.BOUNCED, "550", "5.7.30", "REQUIRETLS support required"
    )
    report = build_dsn(msg, [fail], BODY, "out.test")
    assert report.requiretls and report.mail_from == ""
    parsed = email.message_from_bytes(report.inline_content, policy=email.policy.default)
    _human, status, returned = parsed.iter_parts()  # type: ignore[attr-defined]
    assert "Status: 5.7.30" in status.as_string()
    # RFC 8689 §5: as if RET=HDRS, whatever RET the sender gave.
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"Subject: secret" in report.inline_content
    assert b"the body" not in report.inline_content
