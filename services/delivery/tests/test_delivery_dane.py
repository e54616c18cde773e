"""DANE for SMTP (RFC 7672) on the sending side: TLSA matching against certificate chains, and
the relay's per-host policy against a scripted peer on loopback with a resolver whose answers
are signed or not (the AD bit)."""

from __future__ import annotations

import datetime
import hashlib
import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from delivery_fakes import FakeResolver, FakeSmtp, timeout

from postmesh.delivery.dane import DaneMismatch, DanePolicy, Tlsa
from postmesh.delivery.model import Outcome, RecipientResult
from postmesh.delivery.mta_sts import parse_policy
from postmesh.delivery.relay import Relay
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import Envelope, Rcpt

BODY = b"From: a@x.test\r\nTo: b@remote.test\r\nSubject: dane\r\n\r\nthe body\r\n"
NOW = datetime.datetime.now(datetime.UTC)


class Cert:
    """A certificate (ECDSA P-256) and its key; issued by ``issuer`` or self-signed."""

    def __init__(
        self,
        name: str,
        issuer: Cert | None = None,
        ca: bool = False,
        days: tuple[int, int] = (-1, 30),
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + datetime.timedelta(days=days[0]))
            .not_valid_after(NOW + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
            )
        self.cert = builder.sign(issuer.key if issuer else self.key, hashes.SHA256())
        self.der = self.cert.public_bytes(serialization.Encoding.DER)

    def spki_sha256(self) -> str:
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(spki).hexdigest()

    def server_context(self, tmp: Path, *chain: Cert) -> ssl.SSLContext:
        pem = b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in (self, *chain))
        (tmp / "chain.pem").write_bytes(pem)
        (tmp / "key.pem").write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")
        return ctx


def tlsa(text: str) -> Tlsa:
    usage, selector, mtype, data = text.split()
    return Tlsa(int(usage), int(selector), int(mtype), bytes.fromhex(data))


# --- matching (RFC 6698 §2.1, RFC 7671, RFC 7672 §3.1) ----------------------------------------


def test_tlsa_selectors_and_matching_types() -> None:
    c = Cert("mx.remote.test")
    spki = c.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert tlsa(f"3 0 0 {c.der.hex()}").matches(c.der)
    assert tlsa(f"3 0 1 {hashlib.sha256(c.der).hexdigest()}").matches(c.der)
    assert tlsa(f"3 1 0 {spki.hex()}").matches(c.der)
    assert tlsa(f"3 1 1 {c.spki_sha256()}").matches(c.der)
    assert tlsa(f"3 1 2 {hashlib.sha512(spki).hexdigest()}").matches(c.der)
    assert not tlsa(f"3 1 1 {Cert('other.test').spki_sha256()}").matches(c.der)


def test_pkix_usages_and_unknown_parameters_are_unusable() -> None:
    assert tlsa("3 1 1 00").usable and tlsa("2 0 2 00").usable
    # RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.
    assert not any(tlsa(t).usable for t in ("0 1 1 00", "1 1 1 00", "3 2 1 00", "3 1 3 00"))


def test_dane_ee_binds_the_key_alone_not_names_or_dates() -> None:
    expired = Cert("some.other.name", days=(-60, -30))
    policy = DanePolicy("mx.remote.test", (tlsa(f"3 1 1 {expired.spki_sha256()}"),), ())
    assert policy.check([expired.der]).startswith("DANE-EE")
    with pytest.raises(DaneMismatch, match="does not match its TLSA records"):
        policy.check([Cert("mx.remote.test").der])
    with pytest.raises(DaneMismatch, match="sent no certificate"):
        policy.check([])


def test_dane_ta_needs_the_anchor_in_the_chain_a_signature_and_a_name() -> None:
    ca = Cert("Remote CA", ca=True)
    leaf = Cert("mx.remote.test", issuer=ca)
    names = ("mx.remote.test", "remote.test")
    policy = DanePolicy("mx.remote.test", (tlsa(f"2 1 1 {ca.spki_sha256()}"),), names)
    assert policy.check([leaf.der, ca.der]) == f"DANE-TA {policy.records[0]} at depth 1"
    # The anchor must be sent: a leaf alone matches no issuer.
    with pytest.raises(DaneMismatch):
        policy.check([leaf.der])
    # A chain claiming the anchor's name but signed by another key does not verify.
    forged = Cert("mx.remote.test", issuer=Cert("Remote CA", ca=True))
    with pytest.raises(DaneMismatch, match="chain does not verify"):
        policy.check([forged.der, ca.der])
    # RFC 7672 §3.2.2: the server certificate must name the host or the next-hop domain.
    stranger = Cert("mx.elsewhere.test", issuer=ca)
    with pytest.raises(DaneMismatch, match=re.escape("names none of mx.remote.test, remote.test")):
        policy.check([stranger.der, ca.der])
    expired = Cert("mx.remote.test", issuer=ca, days=(-60, -30))
    with pytest.raises(DaneMismatch, match="expired"):
        policy.check([expired.der, ca.der])
    wildcard = Cert("*.remote.test", issuer=ca)
    assert policy.check([wildcard.der, ca.der]).startswith("DANE-TA")


# --- the relay's policy per MX host (RFC 7672 §2.2) ---------------------------------------------


def zone(signed: bool = True, records: tuple[str, ...] = ()) -> FakeResolver:
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.")
    dns_.add("mx1.remote.test", "A", "127.0.0.1")
    if records:
        dns_.add("_25._tcp.mx1.remote.test", "TLSA", *records)
    if signed:
        dns_.sign("remote.test", "mx1.remote.test", "_25._tcp.mx1.remote.test")
    return dns_


def relay(peer: FakeSmtp, dns_: FakeResolver, **kw: Any) -> Relay:
    """The TLSA owner name carries the port (RFC 7672 §2.2.3): the scripted peer's, here."""
    for (name, rdtype), values in list(dns_.zone.items()):
        if name.startswith("_25._tcp."):
            dns_.zone[(name.replace("_25.", f"_{peer.port}.", 1), rdtype)] = values
    dns_.signed |= {n.replace("_25.", f"_{peer.port}.", 1) for n in dns_.signed}
    settings = DeliverySettings(smtp_port=peer.port, hostname="out.test", mta_sts=False, **kw)
    return Relay(settings, dns_, None)  # type: ignore[arg-type]


async def one(r: Relay, env: Envelope | None = None) -> RecipientResult:
    [res] = await r.deliver(
        "remote.test", env or Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY
    )
    await r.cache.close_all()
    return res


async def tls_peer(tmp_path: Path, cert: Cert, *chain: Cert, **kw: Any) -> FakeSmtp:
    return await FakeSmtp(tls=cert.server_context(tmp_path, *chain), **kw).start()


async def test_matching_tlsa_authenticates_and_delivers(tmp_path: Path) -> None:
    cert = Cert("mx1.remote.test")
    peer = await tls_peer(tmp_path, cert)
    r = await one(relay(peer, zone(records=(f"3 1 1 {cert.spki_sha256()}",))))
    assert r.outcome is Outcome.RELAYED
    assert peer.tls_sessions == 1 and len(peer.transactions) == 1
    await peer.stop()


async def test_dane_ta_chain_against_a_real_handshake(tmp_path: Path) -> None:
    ca = Cert("Remote CA", ca=True)
    peer = await tls_peer(tmp_path, Cert("mx1.remote.test", issuer=ca), ca)
    r = await one(relay(peer, zone(records=(f"2 1 1 {ca.spki_sha256()}",))))
    assert r.outcome is Outcome.RELAYED and len(peer.transactions) == 1
    await peer.stop()


async def test_a_certificate_that_does_not_match_gets_no_mail(tmp_path: Path) -> None:
    peer = await tls_peer(tmp_path, Cert("mx1.remote.test"))
    other = Cert("mx1.remote.test").spki_sha256()
    r = await one(relay(peer, zone(records=(f"3 1 1 {other}",))))
    assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.7.5")
    assert "does not match its TLSA records" in r.diagnostic
    assert peer.tls_sessions == 1 and peer.transactions == []  # no fallback to plaintext
    await peer.stop()


async def test_a_host_without_starttls_gets_no_mail(tmp_path: Path) -> None:
    peer = await FakeSmtp().start()
    r = await one(relay(peer, zone(records=(f"3 1 1 {Cert('x').spki_sha256()}",))))
    assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.7.5")
    assert "does not offer STARTTLS" in r.diagnostic and peer.transactions == []
    await peer.stop()


async def test_unusable_records_make_tls_mandatory_without_authentication(
    tmp_path: Path,
) -> None:
    unusable = ("1 1 1 " + "00" * 32,)  # PKIX-EE: unusable in SMTP (RFC 7672 §3.1.3)
    plain = await FakeSmtp().start()
    r = await one(relay(plain, zone(records=unusable)))
    assert r.outcome is Outcome.DEFERRED and plain.transactions == []
    await plain.stop()
    peer = await tls_peer(tmp_path, Cert("any.name.test"))
    r = await one(relay(peer, zone(records=unusable)))
    assert r.outcome is Outcome.RELAYED and peer.tls_sessions == 1
    await peer.stop()


async def test_a_failed_tlsa_look_up_defers_without_connecting() -> None:
    peer = await FakeSmtp().start()
    dns_ = zone()
    dns_.zone[("_25._tcp.mx1.remote.test", "TLSA")] = timeout()
    r = await one(relay(peer, dns_))
    assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.7.5")
    assert "TLSA look-up" in r.diagnostic and peer.connections == 0
    await peer.stop()


@pytest.mark.parametrize("case", ["unsigned", "no_records", "dane_off"])
async def test_without_signed_tlsa_records_tls_stays_opportunistic(case: str) -> None:
    peer = await FakeSmtp().start()  # no STARTTLS: plaintext as before
    records = () if case == "no_records" else (f"3 1 1 {Cert('x').spki_sha256()}",)
    dns_ = zone(signed=case != "unsigned", records=records)
    r = await one(relay(peer, dns_, **({"dane": False} if case == "dane_off" else {})))
    assert r.outcome is Outcome.RELAYED and len(peer.transactions) == 1
    # Only a host whose addresses are signed has its TLSA records looked up (§2.2.2).
    tlsa_asked = any(t == "TLSA" for _, t in dns_.queries)
    assert tlsa_asked is (case == "no_records")
    await peer.stop()


async def test_dane_wins_over_an_mta_sts_policy_that_does_not_list_the_host(
    tmp_path: Path,
) -> None:
    class Fixed:
        async def policy(self, domain: str) -> Any:
            return parse_policy(
                "version: STSv1\nmode: enforce\nmx: other.test\nmax_age: 86400\n", "1"
            )

    cert = Cert("mx1.remote.test")
    peer = await tls_peer(tmp_path, cert)
    dns_ = zone(records=(f"3 1 1 {cert.spki_sha256()}",))
    r = relay(peer, dns_)
    r.mta_sts = Fixed()  # type: ignore[assignment]
    res = await one(r)
    assert res.outcome is Outcome.RELAYED and len(peer.transactions) == 1
    await peer.stop()


async def test_requiretls_over_dane_with_signed_mx_records(tmp_path: Path) -> None:
    """RFC 8689 §4.2.1: the MX validated by DNSSEC, the certificate by DANE."""
    cert = Cert("mx1.remote.test")
    peer = await tls_peer(tmp_path, cert, tls_extensions=("REQUIRETLS",))
    r = await one(
        relay(peer, zone(records=(f"3 1 1 {cert.spki_sha256()}",))),
        Envelope("a@x.test", requiretls=True),
    )
    assert r.outcome is Outcome.RELAYED
    [tx] = peer.transactions
    assert b"REQUIRETLS" in tx.mail
    await peer.stop()
