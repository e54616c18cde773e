"""Submission (587) and submissions (465) over the wire: AUTH, STARTTLS, implicit TLS, relay."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from typing import TYPE_CHECKING

import pytest

from postmesh.smtp_edge.session import SessionState, listener_policies

if TYPE_CHECKING:
    from conftest import Edge

MESSAGE = b"From: alice@example.org\r\nTo: dave@elsewhere.example\r\nSubject: out\r\n\r\nhi\r\n"


def _queue_id(reply: tuple[int, bytes]) -> str:
    assert reply[0] == 250, reply
    return reply[1].rsplit(b" ", 1)[1].decode()


async def test_submission_auth_plain_then_relay(edge: Edge) -> None:
    def run() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            assert "starttls" in s.esmtp_features
            # Loopback counts as secure: AUTH is offered before STARTTLS.
            assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
            s.user, s.password = "alice@example.org", "wonderland"
            auth = s.auth("PLAIN", s.auth_plain)
            s.mail("alice@example.org")
            rcpt = s.rcpt("dave@elsewhere.example")
            return auth, rcpt, s.data(MESSAGE)

    auth, rcpt, data = await asyncio.to_thread(run)
    assert auth == (235, b"2.7.0 Authentication successful")
    assert rcpt == (250, b"2.1.5 Ok")
    queue_id = _queue_id(data)
    [msg] = await edge.messages(1)
    assert msg.queue_id == queue_id
    assert [r.address for r in msg.recipients] == ["dave@elsewhere.example"]
    assert msg.client.authenticated_user == "alice@example.org"
    assert msg.client.listener == "submission"
    assert f"with ESMTPA id {queue_id}".encode() in msg.inline_content
    assert edge.backend.auth_calls == [("alice@example.org", "PLAIN", "127.0.0.1")]


@pytest.mark.parametrize("initial_response", [True, False])
async def test_submission_auth_login(edge: Edge, initial_response: bool) -> None:
    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            s.user, s.password = "bob@example.org", "builder"
            return s.auth("LOGIN", s.auth_login, initial_response_ok=initial_response)

    assert await asyncio.to_thread(run) == (235, b"2.7.0 Authentication successful")
    assert edge.backend.auth_calls == [("bob@example.org", "LOGIN", "127.0.0.1")]


async def test_submission_auth_failure(edge: Edge) -> None:
    def run() -> smtplib.SMTPAuthenticationError:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                s.login("alice@example.org", "wrong")
            # Still not authenticated: MAIL is refused.
            assert s.mail("alice@example.org") == (530, b"5.7.0 Authentication required")
            return err.value

    err = await asyncio.to_thread(run)
    assert err.smtp_code == 535
    assert err.smtp_error == b"5.7.8 Error: authentication failed"


async def test_submission_auth_malformed_and_aborted(edge: Edge) -> None:
    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            return [
                s.docmd("AUTH PLAIN !!!notbase64"),
                s.docmd("AUTH PLAIN " + base64.b64encode(b"no-nul-separators").decode()),
                s.docmd("AUTH CRAM-MD5"),
                s.docmd("AUTH LOGIN"),
                s.docmd("*"),
            ]

    replies = await asyncio.to_thread(run)
    assert replies[0] == (501, b"5.5.2 Cannot decode response")
    assert replies[1] == (501, b"5.5.2 Cannot decode response")
    assert replies[2] == (504, b"5.5.4 Unrecognized authentication type")
    assert replies[3] == (334, base64.b64encode(b"Username:"))
    assert replies[4] == (501, b"5.7.0 Authentication aborted")


async def test_submission_requires_auth_before_mail(edge: Edge) -> None:
    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            return [s.mail("alice@example.org"), s.rcpt("bob@example.org")]

    mail, rcpt = await asyncio.to_thread(run)
    assert mail == (530, b"5.7.0 Authentication required")
    assert rcpt == (530, b"5.7.0 Authentication required")


async def test_submission_starttls_then_auth(edge: Edge, client_tls: ssl.SSLContext) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            assert s.starttls(context=client_tls) == (220, b"2.0.0 Ready to start TLS")
            s.ehlo("laptop.test")
            features = dict(s.esmtp_features)
            auth = s.login("alice@example.org", "wonderland")
            s.mail("alice@example.org")
            s.rcpt("bob@example.org")
            return features, auth, s.data(MESSAGE)

    features, auth, data = await asyncio.to_thread(run)
    assert "starttls" not in features
    assert "auth" in features
    assert auth == (235, b"2.7.0 Authentication successful")
    queue_id = _queue_id(data)
    [msg] = await edge.messages(1)
    assert msg.client.tls
    assert msg.client.authenticated_user == "alice@example.org"
    received = msg.inline_content.split(b"\r\nFrom:")[0].decode()
    assert "(using TLSv1." in received
    assert f"with ESMTPSA id {queue_id}" in received


async def test_submissions_implicit_tls(edge: Edge, client_tls: ssl.SSLContext) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP_SSL("127.0.0.1", edge.submissions, context=client_tls, timeout=10) as s:
            s.ehlo("laptop.test")
            features = dict(s.esmtp_features)
            starttls = s.docmd("STARTTLS")
            auth = s.login("alice@example.org", "wonderland")
            s.mail("alice@example.org")
            s.rcpt("dave@elsewhere.example")
            assert starttls == (554, b"5.5.1 Error: TLS already active")
            return features, auth, s.data(MESSAGE)

    features, auth, data = await asyncio.to_thread(run)
    assert "starttls" not in features
    assert features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert auth == (235, b"2.7.0 Authentication successful")
    queue_id = _queue_id(data)
    [msg] = await edge.messages(1)
    assert msg.client.listener == "submissions"
    assert msg.client.tls
    assert f"with ESMTPSA id {queue_id}".encode() in msg.inline_content


async def test_auth_backend_down_is_temporary(edge: Edge) -> None:
    edge.backend.auth_down = True

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            return s.docmd(
                "AUTH PLAIN " + base64.b64encode(b"\0alice@example.org\0wonderland").decode()
            )

    assert await asyncio.to_thread(run) == (454, b"4.7.0 Temporary authentication failure")


def test_auth_is_offered_off_loopback_only_with_tls() -> None:
    """The loopback exemption cannot be exercised over 127.0.0.1, so the policy is checked
    directly: a remote peer gets AUTH only once TLS is up (RFC 4954 §4, RFC 8314)."""
    _, submission, submissions = listener_policies(mx_auth_enabled=False)
    remote = SessionState("s1", submission, peer_ip="192.0.2.7")
    assert not remote.auth_offered
    remote.reset_after_starttls(tls=object())  # type: ignore[arg-type]
    assert remote.auth_offered
    assert SessionState("s2", submission, peer_ip="::1").auth_offered
    implicit = SessionState("s3", submissions, peer_ip="192.0.2.7", tls=object())  # type: ignore[arg-type]
    assert implicit.auth_offered
