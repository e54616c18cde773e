"""Inbound mail authentication through the whole system: a real dnsmasq serves SPF, DKIM and
DMARC records (with a TTL, as real zones have, so the MX's resolver keeps them), a message
DKIM-signed in the test goes to the MX from 127.0.0.1, and the Authentication-Results header
read back over IMAP shows the results; a DMARC p=reject failure gets 550 5.7.1 over the wire,
also behind a second From field, and a p=quarantine failure lands in Junk; a message whose
first line is no header field is stored with everything from that line on as its body."""

from __future__ import annotations

import functools
import imaplib
import smtplib
import uuid
from collections.abc import Iterator
from pathlib import Path

import authres
import dkim
import pytest

from postmesh.common.devstack import Stack
from postmesh.common.mailauth.fakedns import rsa_test_key
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.stack import embedded_env, start_stack, wait_for
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

HOSTNAME = "mx.postmesh.test"
USER, PASSWORD = "alice@inbound.test", "inbound-secret"
KEY, PUB = rsa_test_key()


@pytest.fixture(scope="module")
def dns_server() -> Iterator[Dnsmasq]:
    records = [
        # The test sends from 127.0.0.1.
        ("example.net", "v=spf1 ip4:127.0.0.1 -all"),
        ("sel._domainkey.example.net", f"v=DKIM1; k=rsa; p={PUB}"),
        ("_dmarc.example.net", "v=DMARC1; p=reject"),
        ("other.example", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.careful.example", "v=DMARC1; p=quarantine"),
        # SPF through an include and an a: mechanism: more than the one TXT record the edge
        # asks for itself, so a first check needs the network.
        ("chain.example", "v=spf1 include:_spf.chain.example -all"),
        ("_spf.chain.example", "v=spf1 a:out.chain.example -all"),
        ("elsewhere.example", "v=spf1 include:_spf.elsewhere.example -all"),
        ("_spf.elsewhere.example", "v=spf1 ip4:192.0.2.0/24 -all"),
    ]
    zone = Zone(
        txt=records,
        a=[("out.chain.example", "127.0.0.1")],
        zones=[
            "example.net",
            "other.example",
            "careful.example",
            "chain.example",
            "elsewhere.example",
        ],
    )
    with Dnsmasq(zone, ttl=300) as d:
        yield d


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory, dns_server: Dnsmasq) -> Iterator[Stack]:
    env = {
        **embedded_env(),
        "POSTMESH_DNS_SERVERS": dns_server.servers,
        "POSTMESH_DNS_TIMEOUT_SECONDS": "2",
        "POSTMESH_HOSTNAME": HOSTNAME,
    }
    stack = start_stack(Path(tmp_path_factory.mktemp("inbound-auth")), env)
    try:
        create_user(stack, USER, PASSWORD)
        yield stack
    finally:
        for svc in ("smtp-edge", "delivery"):
            print(f"----- {svc} log tail -----\n{stack.log_tail(svc, 30)}")
        print(f"----- dnsmasq -----\n{dns_server.log_tail()}")
        stack.stop()


def message(author: str, marker: str) -> bytes:
    return (
        f"From: {author}\r\nTo: <{USER}>\r\nSubject: inbound {marker}\r\n"
        f"Message-ID: <{marker}@example.net>\r\n\r\nchecked on the way in\r\n"
    ).encode()


def send(stack: Stack, sender: str, msg: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as s:
        s.ehlo("client.example.net")
        s.mail(sender)
        s.rcpt(USER)
        return s.data(msg)


def fetch(stack: Stack, mailbox: str, marker: str) -> bytes | None:
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(USER, PASSWORD)
        typ, _ = imap.select(mailbox, readonly=True)
        assert typ == "OK"
        typ, data = imap.search(None, "SUBJECT", f'"{marker}"')
        ids = data[0].split() if data and data[0] else []
        if not ids:
            return None
        typ, fetched = imap.fetch(ids[-1], "(BODY.PEEK[])")
        assert typ == "OK"
        part = fetched[0]
        assert isinstance(part, tuple)
        return part[1]


def our_results(content: bytes) -> dict[str, str]:
    header = content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    [line] = [
        h
        for h in header.split(b"\r\n")
        if h.startswith(b"Authentication-Results: " + HOSTNAME.encode())
    ]
    parsed = authres.AuthenticationResultsHeader.parse(line.decode())
    assert parsed.authserv_id == HOSTNAME
    return {r.method: r.result for r in parsed.results}


def test_signed_message_shows_spf_dkim_dmarc_pass_over_imap(auth_stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    msg = message("Carol <carol@example.net>", marker)
    sig = dkim.sign(msg, b"sel", b"example.net", KEY, include_headers=[b"from", b"subject"])
    code, text = send(auth_stack, "carol@example.net", bytes(sig) + msg)
    assert code == 250, text
    stored = wait_for(lambda: fetch(auth_stack, "INBOX", marker), what="the message in IMAP")
    results = our_results(stored)
    assert results["spf"] in ("pass", "none")  # the last spf= is the HELO identity's
    assert b"spf=pass smtp.mailfrom=example.net" in stored
    assert results["dkim"] == "pass"
    assert results["dmarc"] == "pass"
    assert f"by {HOSTNAME} (Postmesh) with ESMTP id".encode() in stored


def test_dmarc_reject_failure_is_refused_over_the_wire(auth_stack: Stack) -> None:
    # SPF passes for other.example, but From says example.net (p=reject) and nothing aligns.
    code, text = send(auth_stack, "bounce@other.example", message("ceo@example.net", "spoof"))
    assert (code, text) == (550, b"5.7.1 Message rejected per DMARC policy of example.net")


def test_a_second_from_field_does_not_hide_a_reject_policy(auth_stack: Stack) -> None:
    msg = message("ceo@example.net", "two-froms").replace(
        b"\r\nTo:", b"\r\nFrom: me@careful.example\r\nTo:", 1
    )
    code, text = send(auth_stack, "bounce@other.example", msg)
    assert (code, text) == (550, b"5.7.1 Message rejected per DMARC policy of example.net")


def test_a_first_line_that_is_no_field_makes_the_rest_body(auth_stack: Stack) -> None:
    """A lone continuation line first once folded into our Received field, making the forged
    From below it a header that the DMARC check never read (accepted, and shown as from
    ceo@example.net). Now it and all after it are body, as with Postfix's cleanup."""
    fetch(auth_stack, "INBOX", "provision")
    marker = uuid.uuid4().hex[:10]
    forged = b" \r\n" + message("ceo@example.net", marker)
    code, _ = send(auth_stack, "bounce@other.example", forged)
    assert code == 250

    # Subject is body too, so the message is found by its text.
    def by_text() -> bytes | None:
        with imaplib.IMAP4("127.0.0.1", auth_stack.ports.imap) as imap:
            imap.starttls(insecure_tls())
            imap.login(USER, PASSWORD)
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "BODY", marker)
            if not data or not data[0]:
                return None
            _, fetched = imap.fetch(data[0].split()[-1], "(BODY.PEEK[HEADER] BODY.PEEK[TEXT])")
            return b"".join(p[1] for p in fetched if isinstance(p, tuple))

    stored = wait_for(by_text, what="the message in IMAP")
    header, _, text = stored.partition(b"\r\n\r\n")
    assert b"ceo@example.net" not in header and b"\r\nFrom:" not in header
    assert text.startswith(forged)
    assert our_results(stored)["dmarc"] == "permerror"


def test_dmarc_quarantine_failure_lands_in_junk(auth_stack: Stack) -> None:
    fetch(auth_stack, "INBOX", "provision")  # first login provisions INBOX and Junk
    marker = uuid.uuid4().hex[:10]
    code, _ = send(auth_stack, "bounce@other.example", message("x@careful.example", marker))
    assert code == 250
    stored = wait_for(lambda: fetch(auth_stack, "Junk", marker), what="the message in Junk")
    assert our_results(stored)["dmarc"] == "fail"
    assert fetch(auth_stack, "INBOX", marker) is None


def test_spf_through_includes_is_the_same_when_answered_from_the_cache(auth_stack: Stack) -> None:
    """Each sender twice: the first check asks dnsmasq for the include and the A record (in a
    worker thread), the second finds every answer kept by the resolver and runs on the event
    loop (ADR 79); both give the same result."""
    for domain, expected in (("chain.example", "pass"), ("elsewhere.example", "fail")):
        for _ in range(2):
            marker = uuid.uuid4().hex[:10]
            code, text = send(auth_stack, f"bob@{domain}", message(f"Bob <bob@{domain}>", marker))
            assert code == 250, text
            stored = wait_for(
                functools.partial(fetch, auth_stack, "INBOX", marker), what="the message"
            )
            assert f"spf={expected} smtp.mailfrom={domain}".encode() in stored, stored[:600]
            assert our_results(stored)["dmarc"] == "none"
