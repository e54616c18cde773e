"""SMTP conformance found by a differential test against Postfix, over the wire against a
running system (embedded backends, the real auth service):

- RFC 5321 §4.1.2 addresses no account can have are answered for good, not with a temporary
  failure: a quoted local part whose content is a dot-atom is that mailbox, a quoted "a b" or
  a local part over 64 octets at our domain is an unknown user, and the same at a remote
  domain is relayed for an authenticated sender;
- a client that pipelines a transaction and closes its sending side gets every reply, and the
  message arrives once (RFC 2920 §3.2);
- RCPTs past the recipient limit get 452 and the transaction goes on (RFC 5321 §4.5.3.1.10);
- postmaster@ a hosted domain and <Postmaster> reach POSTMESH_AUTH_POSTMASTER (§4.5.1)."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postmesh.common.devstack import Stack
from tests.integration.stack import embedded_env, start_stack, wait_for
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

USER, PASSWORD = "diff@conformance.test", "conformance-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(
        Path(tmp_path_factory.mktemp("smtp-conformance")),
        {
            **embedded_env(),
            "POSTMESH_SMTP_MAX_RECIPIENTS": "2",
            "POSTMESH_AUTH_POSTMASTER": USER,
        },
    )
    try:
        create_user(s, USER, PASSWORD)
        yield s
    finally:
        s.stop()


def count(stack: Stack, marker: str) -> int:
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(USER, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "SUBJECT", marker)
        return len(data[0].split()) if data and data[0] else 0


def _arrived(stack: Stack, marker: str) -> Callable[[], int | None]:
    return lambda: count(stack, marker) or None


def message(marker: str) -> bytes:
    return f"From: <sender@remote.example>\r\nSubject: {marker}\r\n\r\nbody\r\n".encode()


def test_addresses_beyond_account_syntax_get_lasting_answers(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    long_local = "SRS0=HHH5=TT=" + "x" * 60
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as s:
        s.ehlo("client.remote.example")
        s.mail("sender@remote.example")
        assert s.rcpt('"diff"@conformance.test') == (250, b"2.1.5 Ok")
        for unknown in ('"a b"@conformance.test', f"{long_local}@conformance.test"):
            code, text = s.rcpt(unknown)
            assert code == 550 and text.startswith(b"5.1.1 "), (unknown, text)
        assert s.data(message(marker))[0] == 250
    assert wait_for(lambda: count(stack, marker) or None, what="the message") == 1
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login(USER, PASSWORD)
        s.mail(USER)
        assert s.rcpt('"john smith"@remote.invalid') == (250, b"2.1.5 Ok")
        assert s.rcpt(f"{long_local}@fwd.example") == (250, b"2.1.5 Ok")
        assert s.rset()[0] == 250


def test_a_half_closed_pipelined_transaction_is_answered_and_stored_once(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    body = message(marker)
    burst = (
        b"EHLO client.remote.example\r\nMAIL FROM:<sender@remote.example>\r\n"
        b"RCPT TO:<" + USER.encode() + b">\r\nBDAT %d LAST\r\n" % len(body) + body + b"QUIT\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.ports.smtp_mx), timeout=30) as sock:
        sock.sendall(burst)
        sock.shutdown(socket.SHUT_WR)
        replies = b""
        while chunk := sock.recv(4096):
            replies += chunk
    codes = [line[:4] for line in replies.split(b"\r\n") if line]
    assert codes[-4:] == [b"250 ", b"250 ", b"250 ", b"221 "], replies
    assert wait_for(lambda: count(stack, marker) or None, what="the message") == 1


def test_recipients_past_the_limit_get_452_and_the_message_goes_through(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:10]
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as s:
        s.ehlo("client.remote.example")
        s.mail("sender@remote.example")
        replies = [s.rcpt(f"diff+{i}@conformance.test") for i in range(25)]
        assert replies[:2] == [(250, b"2.1.5 Ok")] * 2
        assert set(replies[2:]) == {(452, b"4.5.3 Too many recipients")}
        assert s.data(message(marker))[0] == 250
    assert wait_for(lambda: count(stack, marker) or None, what="the message") == 1


def test_postmaster_of_the_domain_and_the_bare_postmaster_are_delivered(stack: Stack) -> None:
    for rcpt in ("postmaster@conformance.test", "Postmaster"):
        marker = uuid.uuid4().hex[:10]
        with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as s:
            s.ehlo("client.remote.example")
            assert s.docmd("MAIL FROM:<>") == (250, b"2.1.0 Ok")  # a report or a bounce
            assert s.docmd(f"RCPT TO:<{rcpt}>") == (250, b"2.1.5 Ok"), rcpt
            assert s.data(message(marker))[0] == 250
        assert wait_for(_arrived(stack, marker), what=f"mail to {rcpt}") == 1
