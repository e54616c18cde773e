"""REQUIRETLS (RFC 8689) at the edge, over the wire: offered in EHLO and accepted at MAIL only
under TLS, and carried on the bus record for delivery."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from typing import TYPE_CHECKING

import pytest

from postmesh.smtp_edge.protocol import ProtocolError, ehlo_keywords, parse_mail

if TYPE_CHECKING:
    from conftest import Edge

MESSAGE = b"From: carol@remote.example\r\nTo: alice@example.org\r\nSubject: s\r\n\r\nsecret\r\n"
NO_TLS = (530, b"5.7.10 REQUIRETLS requires a TLS session (STARTTLS first)")


def test_parse_mail_requiretls() -> None:
    assert parse_mail("FROM:<a@b.test> REQUIRETLS", esmtp=True, max_size=100).requiretls
    assert parse_mail("FROM:<a@b.test> requiretls SIZE=5", esmtp=True, max_size=100).requiretls
    assert not parse_mail("FROM:<a@b.test>", esmtp=True, max_size=100).requiretls
    # RFC 8689 §3: no value; and like every parameter it needs EHLO (RFC 5321 §4.1.1.11).
    with pytest.raises(ProtocolError, match=r"501 5\.5\.4 REQUIRETLS takes no value"):
        parse_mail("FROM:<a@b.test> REQUIRETLS=YES", esmtp=True, max_size=100)
    with pytest.raises(ProtocolError, match="555"):
        parse_mail("FROM:<a@b.test> REQUIRETLS", esmtp=False, max_size=100)
    with pytest.raises(ProtocolError, match="Duplicate parameter REQUIRETLS"):
        parse_mail("FROM:<a@b.test> REQUIRETLS REQUIRETLS", esmtp=True, max_size=100)


def test_ehlo_keyword_only_when_asked() -> None:
    common = {"max_size": 10, "starttls": False, "auth": False, "mechanisms": ()}
    assert "REQUIRETLS" not in ehlo_keywords(**common)  # type: ignore[arg-type]
    assert ehlo_keywords(**common, requiretls=True)[-1] == "REQUIRETLS"  # type: ignore[arg-type]


def _plain_mx(port: int) -> tuple[dict[str, str], tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        features = dict(s.esmtp_features)
        refused = s.docmd("MAIL FROM:<carol@remote.example> REQUIRETLS")
        # The refused MAIL started no transaction: an ordinary one still works.
        ok = s.mail("carol@remote.example")
        return features, refused, ok


async def test_mx_without_tls_neither_offers_nor_accepts_it(edge: Edge) -> None:
    features, refused, ok = await asyncio.to_thread(_plain_mx, edge.mx)
    assert "starttls" in features and "requiretls" not in features
    assert refused == NO_TLS
    assert ok == (250, b"2.1.0 Ok")


async def test_mx_after_starttls_carries_it_to_the_bus(
    edge: Edge, client_tls: ssl.SSLContext
) -> None:
    def run() -> tuple[dict[str, str], list[tuple[int, bytes]]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=client_tls)
            s.ehlo("client.test")
            features = dict(s.esmtp_features)
            replies = [
                s.docmd("MAIL FROM:<carol@remote.example> REQUIRETLS SIZE=100"),
                s.rcpt("alice@example.org"),
                s.data(MESSAGE),
                # An ordinary message in the same session is not tagged.
                s.mail("dave@remote.example"),
                s.rcpt("alice@example.org"),
                s.data(MESSAGE),
            ]
            return features, replies

    features, replies = await asyncio.to_thread(run)
    assert "requiretls" in features
    assert [code for code, _ in replies] == [250, 250, 250, 250, 250, 250]
    tagged, plain = await edge.messages(2)
    assert (tagged.mail_from, tagged.requiretls, tagged.client.tls) == (
        "carol@remote.example", True, True,
    )  # fmt: skip
    assert (plain.mail_from, plain.requiretls) == ("dave@remote.example", False)
    assert b"with ESMTPS id" in tagged.inline_content


async def test_loopback_submission_needs_starttls_for_it(
    edge: Edge, client_tls: ssl.SSLContext
) -> None:
    """A REQUIRETLS MAIL before STARTTLS is refused; after it, the same command passes."""

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            s.login("alice@example.org", "wonderland")  # loopback: AUTH before TLS
            before = s.docmd("MAIL FROM:<alice@example.org> REQUIRETLS")
            s.starttls(context=client_tls)
            s.ehlo("laptop.test")
            s.login("alice@example.org", "wonderland")
            return before, s.docmd("MAIL FROM:<alice@example.org> REQUIRETLS")

    before, after = await asyncio.to_thread(run)
    # Loopback is trusted for passwords (ADR 4), not for RFC 8689's "the session employs TLS".
    assert before == NO_TLS
    assert after == (250, b"2.1.0 Ok")


async def test_submissions_offers_it_from_the_first_ehlo(
    edge: Edge, client_tls: ssl.SSLContext
) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes]]:
        with smtplib.SMTP_SSL("127.0.0.1", edge.submissions, context=client_tls, timeout=10) as s:
            s.ehlo("laptop.test")
            s.login("alice@example.org", "wonderland")
            s.docmd("MAIL FROM:<alice@example.org> REQUIRETLS")
            s.rcpt("dave@elsewhere.example")
            return dict(s.esmtp_features), s.data(
                MESSAGE.replace(b"carol@remote.example", b"alice@example.org", 1)
            )

    features, data = await asyncio.to_thread(run)
    assert "requiretls" in features and data[0] == 250
    [msg] = await edge.messages(1)
    assert msg.requiretls and msg.client.listener == "submissions"
