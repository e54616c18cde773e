"""Inbound SPF/DKIM/DMARC over the wire on the MX, against an in-memory DNS zone: the
Authentication-Results header, forged ones removed, DMARC reject (550 5.7.1) and quarantine
(filed into Junk), no way around them by a malformed header section or a second From, a
check that breaks defers (451), and no checks for authenticated submission."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from typing import TYPE_CHECKING

import authres
import dkim
import pytest

from postmesh.common.mailauth.fakedns import FakeResolver, rsa_test_key

if TYPE_CHECKING:
    from conftest import EdgeFactory

KEY, PUB = rsa_test_key()


def zone() -> FakeResolver:
    dns = FakeResolver()
    # The test client connects from 127.0.0.1.
    dns.add("example.net", "TXT", ["v=spf1 ip4:127.0.0.1 -all"])
    dns.add("sel._domainkey.example.net", "TXT", [f"v=DKIM1; k=rsa; p={PUB}"])
    dns.add("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject"])
    dns.add("strict.example", "TXT", ["v=spf1 -all"])
    dns.add("_dmarc.strict.example", "TXT", ["v=DMARC1; p=reject"])
    dns.add("_dmarc.careful.example", "TXT", ["v=DMARC1; p=quarantine"])
    return dns


def message(author: str, extra: bytes = b"") -> bytes:
    return (
        extra
        + f"From: {author}\r\nTo: alice@example.org\r\nSubject: auth\r\n"
        "Message-ID: <m1@test>\r\n\r\nhello\r\n".encode()
    )


def signed(msg: bytes, domain: str = "example.net") -> bytes:
    sig = dkim.sign(msg, b"sel", domain.encode(), KEY, include_headers=[b"from", b"subject"])
    return bytes(sig) + msg


def send(port: int, sender: str, msg: bytes) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.example.net")
        s.mail(sender)
        s.rcpt("alice@example.org")
        return s.data(msg), s.noop()


def auth_results(content: bytes) -> authres.AuthenticationResultsHeader:
    """Our Authentication-Results field, parsed by an independent implementation."""
    for line in content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").split(b"\r\n"):
        if line.startswith(b"Authentication-Results: mx.test;"):
            return authres.AuthenticationResultsHeader.parse(line.decode())
    raise AssertionError("no Authentication-Results: mx.test")


def results(header: authres.AuthenticationResultsHeader) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in header.results:
        out.setdefault(r.method, []).append(r.result)
    return out


async def test_pass_is_recorded_and_forged_results_removed(make_edge: EdgeFactory) -> None:
    edge = await make_edge(dns=zone())
    forged = b"Authentication-Results: MX.TEST; dmarc=pass header.from=bank.example\r\n"
    foreign = b"Authentication-Results: other.example; spf=fail\r\n"
    msg = signed(message("Carol <carol@example.net>", forged + foreign))
    data, _ = await asyncio.to_thread(send, edge.mx, "carol@example.net", msg)
    assert data[0] == 250
    [rec] = await edge.messages(1)
    content = rec.inline_content
    assert content.startswith(b"Received: from client.example.net (localhost [127.0.0.1])")
    header = auth_results(content)
    assert results(header) == {
        "iprev": ["pass"],
        "spf": ["pass", "none"],  # MAIL FROM, then HELO (no record for client.example.net)
        "dkim": ["pass"],
        "arc": ["none"],
        "dmarc": ["pass"],
    }
    dkim_result = next(r for r in header.results if r.method == "dkim")
    assert dkim_result.header_d == "example.net"
    assert b"bank.example" not in content  # the forged claim is gone
    assert foreign in content  # another host's results are not ours to remove
    assert content.count(b"Authentication-Results: mx.test;") == 1
    assert rec.mailbox == ""


async def test_dmarc_reject_failure_is_refused_with_550(make_edge: EdgeFactory) -> None:
    edge = await make_edge(dns=zone())
    # SPF passes for the envelope domain, but From claims example.net, unsigned: not aligned.
    dns_spoof = message("Boss <ceo@example.net>")
    data, after = await asyncio.to_thread(send, edge.mx, "bounce@strict.example", dns_spoof)
    assert data == (550, b"5.7.1 Message rejected per DMARC policy of example.net")
    assert after == (250, b"2.0.0 Ok")
    # A DKIM signature by another domain does not align either.
    data, _ = await asyncio.to_thread(
        send, edge.mx, "bounce@strict.example", signed(dns_spoof, "strict.example")
    )
    assert data[0] == 550
    assert await edge.records(0) == []


def header_section(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0] + b"\r\n"


@pytest.mark.parametrize("first", [b" \r\n", b"\t\r\n", b" x\r\n", b"Not a header line\r\n"])
async def test_a_malformed_first_line_makes_the_rest_body_for_every_reader(
    make_edge: EdgeFactory, first: bytes
) -> None:
    """A first line that is not a header field (a lone continuation, or text): all from it on
    is body, with an empty line put before it, as Postfix's cleanup does. It once folded into
    our Received field and the forged From below it became a header our checks never read."""
    edge = await make_edge(dns=zone())
    data, _ = await asyncio.to_thread(
        send, edge.mx, "bounce@strict.example", first + message("Boss <ceo@example.net>")
    )
    assert data[0] == 250
    [rec] = await edge.messages(1)
    head = header_section(rec.inline_content)
    assert b"\r\nFrom:" not in head and b"ceo@example.net" not in head
    assert results(auth_results(rec.inline_content))["dmarc"] == ["permerror"]
    assert rec.inline_content.endswith(b"\r\n\r\n" + first + message("Boss <ceo@example.net>"))


async def test_a_line_that_is_no_field_ends_the_header_section(make_edge: EdgeFactory) -> None:
    edge = await make_edge(dns=zone())
    msg = message("Boss <ceo@example.net>").replace(b"\r\nTo:", b"\r\ngarbage\r\nTo:", 1)
    data, _ = await asyncio.to_thread(send, edge.mx, "bounce@strict.example", msg)
    assert data == (550, b"5.7.1 Message rejected per DMARC policy of example.net")
    # A well-formed message is stored as sent, obs-syntax "Name :" and folding included.
    ok = b"From: x@example.net\r\nSubject : folded\r\n\tline\r\n\r\nbody\r\n"
    data, _ = await asyncio.to_thread(send, edge.mx, "bounce@example.net", ok)
    assert data[0] == 250
    [rec] = await edge.messages(1)
    assert rec.inline_content.endswith(b"\r\n" + ok)


@pytest.mark.parametrize(
    "froms",
    [
        [b"Boss <ceo@example.net>", b"me@careful.example"],
        [b"me@careful.example", b"Boss <ceo@example.net>"],
        [b"me@careful.example, ceo@example.net"],
    ],
)
async def test_a_second_from_cannot_hide_a_reject_policy(
    make_edge: EdgeFactory, froms: list[bytes]
) -> None:
    """RFC 7489 §6.6.1: every author domain is checked, the strictest failure applies."""
    edge = await make_edge(dns=zone())
    msg = b"".join(b"From: " + f + b"\r\n" for f in froms) + b"Subject: two\r\n\r\nhi\r\n"
    data, _ = await asyncio.to_thread(send, edge.mx, "bounce@strict.example", msg)
    assert data == (550, b"5.7.1 Message rejected per DMARC policy of example.net")
    assert await edge.records(0) == []


async def test_a_check_that_breaks_defers_the_message(
    make_edge: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never accepted unchecked (a crafted message could skip DMARC so): 451, nothing queued."""

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr("postmesh.smtp_edge.inbound_auth.check_dmarc", broken)
    edge = await make_edge(dns=zone())
    data, after = await asyncio.to_thread(
        send, edge.mx, "carol@example.net", signed(message("carol@example.net"))
    )
    assert data == (451, b"4.7.0 Temporary failure checking the message")
    assert after == (250, b"2.0.0 Ok")
    assert await edge.records(0) == []


async def test_dmarc_reject_can_be_quarantine_instead(make_edge: EdgeFactory) -> None:
    edge = await make_edge(dns=zone(), smtp_dmarc_reject=False)
    data, _ = await asyncio.to_thread(
        send, edge.mx, "bounce@strict.example", message("ceo@example.net")
    )
    assert data[0] == 250
    [rec] = await edge.messages(1)
    assert rec.mailbox == "Junk"
    assert results(auth_results(rec.inline_content))["dmarc"] == ["fail"]


@pytest.mark.parametrize(("mailbox", "expected"), [("Junk", "Junk"), ("", "")])
async def test_dmarc_quarantine_files_into_junk(
    make_edge: EdgeFactory, mailbox: str, expected: str
) -> None:
    edge = await make_edge(dns=zone(), smtp_dmarc_quarantine_mailbox=mailbox)
    data, _ = await asyncio.to_thread(
        send, edge.mx, "x@strict.example", message("someone@careful.example")
    )
    assert data[0] == 250
    [rec] = await edge.messages(1)
    assert rec.mailbox == expected


async def test_dns_timeouts_are_temperror_and_never_reject(make_edge: EdgeFactory) -> None:
    dns = zone()
    dns.temperror |= {"example.net", "sel._domainkey.example.net", "_dmarc.example.net"}
    edge = await make_edge(dns=dns)
    data, _ = await asyncio.to_thread(
        send, edge.mx, "carol@example.net", signed(message("carol@example.net"))
    )
    assert data[0] == 250
    [rec] = await edge.messages(1)
    got = results(auth_results(rec.inline_content))
    assert got["spf"][0] == "temperror"
    assert got["dkim"] == ["temperror"]
    assert got["dmarc"] == ["temperror"]


async def test_checks_can_be_turned_off(make_edge: EdgeFactory) -> None:
    edge = await make_edge(dns=zone(), smtp_inbound_auth=False)
    data, _ = await asyncio.to_thread(
        send, edge.mx, "bounce@strict.example", message("ceo@example.net")
    )
    assert data[0] == 250
    [rec] = await edge.messages(1)
    assert b"Authentication-Results" not in rec.inline_content
    assert edge.dns.queries == []  # loopback needs no reverse lookup either


async def test_authenticated_submission_is_not_checked(
    make_edge: EdgeFactory, client_tls: ssl.SSLContext
) -> None:
    edge = await make_edge(dns=zone())
    forged = b"Authentication-Results: mx.test; dmarc=pass\r\n"

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.starttls(context=client_tls)
            s.login("alice@example.org", "wonderland")
            s.mail("alice@example.org")
            s.rcpt("bob@example.org")
            return s.data(message("alice@example.org", forged))

    assert (await asyncio.to_thread(run))[0] == 250
    [rec] = await edge.messages(1)
    assert b"Authentication-Results" not in rec.inline_content  # none added, forged removed
    assert not [q for q in edge.dns.queries if q[1] == "TXT"]


async def test_each_dns_question_is_asked_once_per_transaction(make_edge: EdgeFactory) -> None:
    """SPF of MAIL FROM and HELO, DMARC asked ahead at MAIL FROM and again for the From
    domain: one query each (ADR 43); the next transaction asks again."""
    dns = zone()
    edge = await make_edge(dns=dns)
    for n in (1, 2):
        before = len(dns.queries)
        data, _ = await asyncio.to_thread(
            send, edge.mx, "carol@example.net", signed(message("Carol <carol@example.net>"))
        )
        assert data[0] == 250
        asked = dns.queries[before:]
        assert len(asked) == len(set(asked)), asked
        assert ("example.net", "TXT") in asked  # SPF of MAIL FROM
        assert ("_dmarc.example.net", "TXT") in asked
        assert ("client.example.net", "TXT") in asked  # SPF of HELO
        rec = (await edge.messages(n))[-1]
        assert results(auth_results(rec.inline_content))["dmarc"] == ["pass"]
