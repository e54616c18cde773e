"""DANE for outbound SMTP (RFC 7672, ADR 90) against real peers on loopback: nsd serves test
zones signed by dnspython, unbound validates them (trust anchors for the signed ones) and is
delivery's POSTMESH_DNS_SERVERS, and Postfix is the remote MX with STARTTLS, serving a leaf
certificate and the CA that issued it. What the TLSA records say decides whether the mail goes."""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postmesh.common.devstack import Stack
from tests.integration.infra.dnssec import DnssecResolver, SignedZone
from tests.integration.infra.postfix_peer import PostfixPeer, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, quick_env, wait_for
from tests.integration.test_delivery_relay import (
    arrived,
    message,
    new_sender,
    queue_entries,
    reports,
    submit,
)

MX_NAMES = ["mx.ta.test", "mx.ee.test", "mx.wrong.test", "mx.insecure.test", "mx.notls.test"]


def _spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


class Chain:
    """A CA and a server certificate it issued for every MX name, written for Postfix."""

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DANE test CA")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MX_NAMES[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in MX_NAMES]), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())
        )  # fmt: skip
        self.cert_file, self.key_file = directory / "chain.pem", directory / "key.pem"
        self.cert_file.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.leaf, self.ca))
        )
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def domain_records(domain: str, port: int, tlsa: str | None) -> list[tuple[str, str, str]]:
    records = [(domain, "MX", f"10 mx.{domain}."), (f"mx.{domain}", "A", "127.0.0.1")]
    if tlsa is not None:
        records.append((f"_{port}._tcp.mx.{domain}", "TLSA", tlsa))
    return records


class Peers:
    def __init__(self, dns: DnssecResolver, port: int, postfix: PostfixPeer) -> None:
        self.dns, self.port, self.postfix = dns, port, postfix


@pytest.fixture(scope="module")
def peers(
    tmp_path_factory: pytest.TempPathFactory, postfix_peer: Callable[..., PostfixPeer]
) -> Iterator[Peers]:
    port = free_port_on("127.0.0.1")
    chain = Chain(tmp_path_factory.mktemp("dane-certs"))
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    zones = [
        # DANE-TA(2): the CA Postfix sends after its certificate, which names the MX.
        SignedZone("ta.test", domain_records("ta.test", port, f"2 1 1 {_spki_sha256(chain.ca)}")),
        # DANE-EE(3): the server's own key.
        SignedZone("ee.test", domain_records("ee.test", port, f"3 1 1 {_spki_sha256(chain.leaf)}")),
        # Signed records naming another key: the MX gets nothing.
        SignedZone(
            "wrong.test",
            domain_records("wrong.test", port, f"3 1 1 {hashlib.sha256(other).hexdigest()}"),
        ),
        # The same wrong record, unsigned: ignored (RFC 7672 §2.2), opportunistic TLS.
        SignedZone(
            "insecure.test",
            domain_records("insecure.test", port, f"3 1 1 {hashlib.sha256(other).hexdigest()}"),
            signed=False,
        ),
        # Signatures that do not validate: the validating resolver answers SERVFAIL.
        SignedZone("bogus.test", domain_records("bogus.test", port, None), bogus=True),
    ]
    domains = ["ta.test", "ee.test", "wrong.test", "insecure.test", "bogus.test"]
    with DnssecResolver(zones) as dns:
        postfix = postfix_peer(port, domains, tls=(chain.cert_file, chain.key_file))
        yield Peers(dns, port, postfix)


@pytest.fixture(scope="module")
def dane_stack(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Stack]:
    env = {
        **quick_env(),
        **embedded_env(),
        "POSTMESH_DNS_SERVERS": peers.dns.servers,
        "POSTMESH_SMTP_PORT": str(peers.port),
        "POSTMESH_RETRY_SCHEDULE": "1s",
        "POSTMESH_QUEUE_POLL_SECONDS": "0.2",
        "POSTMESH_RELAY_CONNECT_TIMEOUT_SECONDS": "3",
        "POSTMESH_HOSTNAME": "out.example.test",
    }
    stack = Stack(Path(tmp_path_factory.mktemp("dane")), free_stack_ports(), env)
    stack.start(timeout=90)
    yield stack
    print(f"----- delivery log tail -----\n{stack.log_tail('delivery', 60)}")
    stack.stop()


def send(stack: Stack, rcpt: str) -> tuple[str, str, str]:
    sender, pw = new_sender(stack)
    marker = uuid.uuid4().hex[:10]
    submit(stack, sender, pw, [rcpt], message(sender, [rcpt], marker))
    return sender, pw, marker


@pytest.mark.parametrize("domain", ["ta.test", "ee.test"])
def test_a_host_that_matches_its_tlsa_records_gets_the_mail_over_tls(
    dane_stack: Stack, peers: Peers, domain: str
) -> None:
    _, _, marker = send(dane_stack, f"alice@{domain}")
    [got] = wait_for(lambda: arrived(peers.postfix, marker) or None, 60, "the relayed message")
    # Postfix's Received header (smtpd_tls_received_header) records the TLS session.
    received = got.split(b"\r\n\r\n" if b"\r\n\r\n" in got else b"\n\n", 1)[0]
    assert b"(using TLSv1." in received, received
    usage = "DANE-TA 2 1 1" if domain == "ta.test" else "DANE-EE 3 1 1"

    def logged() -> bool | None:
        lines = dane_stack.log_tail("delivery", 400).splitlines()
        return any(f'"mx": "mx.{domain}"' in x and f'"match": "{usage}' in x for x in lines) or None

    wait_for(logged, 10, "delivery's log line on how DANE matched")


def test_a_certificate_that_does_not_match_signed_tlsa_records_gets_no_mail(
    dane_stack: Stack, peers: Peers
) -> None:
    sender, pw, marker = send(dane_stack, "bob@wrong.test")
    entry = wait_for(
        lambda: next(
            (e for e in queue_entries(dane_stack)
             if e.recipient.address == "bob@wrong.test" and e.attempts >= 2),
            None,
        ),
        60, "a deferred queue entry retried",
    )  # fmt: skip
    assert "4.7.5" in entry.last_error and "does not match its TLSA records" in entry.last_error
    assert arrived(peers.postfix, marker) == []  # never sent, not even in plaintext
    assert reports(dane_stack, sender, pw) == []  # deferred, not bounced


def test_unsigned_tlsa_records_are_ignored(dane_stack: Stack, peers: Peers) -> None:
    _, _, marker = send(dane_stack, "carol@insecure.test")
    wait_for(lambda: arrived(peers.postfix, marker) or None, 60, "the relayed message")


def test_a_zone_whose_signatures_fail_validation_defers(dane_stack: Stack, peers: Peers) -> None:
    sender, pw, marker = send(dane_stack, "dave@bogus.test")
    entry = wait_for(
        lambda: next(
            (e for e in queue_entries(dane_stack)
             if e.recipient.address == "dave@bogus.test" and e.attempts >= 1),
            None,
        ),
        60, "a deferred queue entry",
    )  # fmt: skip
    assert entry.last_error.startswith("451 4.4.3"), entry.last_error
    assert arrived(peers.postfix, marker) == []
    assert reports(dane_stack, sender, pw) == []
