"""One SASL implementation (postmesh.common.sasl) on every edge: SCRAM-SHA-256, PLAIN and LOGIN
on IMAP AUTHENTICATE (RFC 9051 §6.2.2, SASL-IR) and SMTP AUTH (RFC 4954), against the real auth
service, with real clients (imaplib, smtplib); bad exchanges over the wire get a protocol error
and the session goes on. POP3's are in test_pop3_clients.py."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import uuid
from collections.abc import Callable

import pytest

from postmesh.common.devstack import Stack
from postmesh.common.sasl.client import ScramClient
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

PASSWORD = "sasl-pass-1"


@pytest.fixture(scope="module")
def user(embedded_stack: Stack) -> str:
    address = f"sasl-{uuid.uuid4().hex[:8]}@sasl.test"
    create_user(embedded_stack, address, PASSWORD)
    return address


class ScramSteps:
    """An imaplib/smtplib authobject for SCRAM-SHA-256: client-first, client-final, then an
    empty answer once the server's signature checked out."""

    def __init__(self, user: str, password: str) -> None:
        self.client = ScramClient(user, password)
        self.step = 0
        self.verified = False

    def __call__(self, challenge: bytes | None = None) -> str:
        # str: smtplib encodes what it is given as ASCII, imaplib as UTF-8.
        self.step += 1
        if self.step == 1:
            return self.client.first().decode()
        if self.step == 2:
            assert challenge is not None
            return self.client.final(challenge).decode()
        assert challenge is not None
        self.verified = self.client.verify(challenge)
        return ""


class LoginSteps:
    """An authobject for LOGIN: the user name at "Username:", else the password."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def __call__(self, challenge: bytes | None = None) -> str:
        return self.user if challenge == b"Username:" else self.password


def for_imaplib(steps: ScramSteps | LoginSteps) -> Callable[[bytes], bytes]:
    return lambda challenge: steps(challenge).encode()


def test_imap_offers_and_accepts_every_mechanism(embedded_stack: Stack, user: str) -> None:
    with imaplib.IMAP4("127.0.0.1", embedded_stack.ports.imap) as m:
        caps = set(m.capabilities)
        assert {"AUTH=SCRAM-SHA-256", "AUTH=PLAIN", "AUTH=LOGIN"} <= caps
        steps = ScramSteps(user, PASSWORD)
        typ, _ = m.authenticate("SCRAM-SHA-256", for_imaplib(steps))
        assert typ == "OK" and steps.verified, "server signature not verified"
        assert m.select("INBOX")[0] == "OK"
    with imaplib.IMAP4("127.0.0.1", embedded_stack.ports.imap) as m:
        assert m.authenticate("LOGIN", for_imaplib(LoginSteps(user, PASSWORD)))[0] == "OK"
    with (
        imaplib.IMAP4("127.0.0.1", embedded_stack.ports.imap) as m,
        pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"),
    ):
        m.authenticate("SCRAM-SHA-256", for_imaplib(ScramSteps(user, "wrong password")))


def test_smtp_offers_and_accepts_every_mechanism(embedded_stack: Stack, user: str) -> None:
    port = embedded_stack.ports.smtp_submission
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.sasl.test")
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        steps = ScramSteps(user, PASSWORD)
        code, _ = s.auth("SCRAM-SHA-256", steps, initial_response_ok=True)
        assert code == 235 and steps.verified
        assert s.mail(user)[0] == 250
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.sasl.test")
        assert s.auth("LOGIN", LoginSteps(user, PASSWORD), initial_response_ok=False)[0] == 235
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.sasl.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("SCRAM-SHA-256", ScramSteps(user, "wrong password"))
        assert e.value.smtp_code == 535


class Wire:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_bad_imap_exchanges_get_bad_or_no_and_the_session_goes_on(embedded_stack: Stack) -> None:
    w = Wire(embedded_stack.ports.imap)
    try:
        assert w.line().startswith(b"* OK")
        assert w.send("a1 AUTHENTICATE SCRAM-SHA-256") == b"+ \r\n"
        assert w.send("%%% not base64").startswith(b"a1 BAD Invalid SASL SCRAM-SHA-256")
        assert w.send("a2 AUTHENTICATE LOGIN") == b"+ " + base64.b64encode(b"Username:") + b"\r\n"
        assert w.send("*") == b"a2 BAD Authentication cancelled\r\n"
        assert w.send("a3 AUTHENTICATE FOO") == (
            b"a3 NO [CANNOT] Unsupported authentication mechanism FOO\r\n"
        )
        # A SCRAM client-first message that is not one (no GS2 header).
        first = base64.b64encode(b"hello").decode()
        assert w.send(f"a4 AUTHENTICATE SCRAM-SHA-256 {first}").startswith(b"a4 BAD Invalid SASL")
        assert w.send("a5 NOOP").startswith(b"a5 OK")
    finally:
        w.close()


def test_bad_smtp_exchanges_get_5xx_and_the_session_goes_on(embedded_stack: Stack) -> None:
    w = Wire(embedded_stack.ports.smtp_submission)
    try:
        assert w.line().startswith(b"220 ")
        w.sock.sendall(b"EHLO client.sasl.test\r\n")
        while not w.line().startswith(b"250 "):
            pass
        assert w.send("AUTH SCRAM-SHA-256") == b"334 \r\n"
        assert w.send("%%% not base64") == b"501 5.5.2 Cannot decode response\r\n"
        assert w.send("AUTH LOGIN") == b"334 " + base64.b64encode(b"Username:") + b"\r\n"
        assert w.send("*") == b"501 5.7.0 Authentication aborted\r\n"
        assert w.send("AUTH FOO") == b"504 5.5.4 Unrecognized authentication type\r\n"
        first = base64.b64encode(b"hello").decode()
        assert w.send(f"AUTH SCRAM-SHA-256 {first}") == b"501 5.5.2 Cannot decode response\r\n"
        assert w.send("NOOP").startswith(b"250 ")
    finally:
        w.close()


def test_a_unicode_password_works_in_any_form_on_every_edge(embedded_stack: Stack) -> None:
    """SASLprep (RFC 4013) for PLAIN, LOGIN and USER/PASS as for SCRAM: set in NFC, typed in
    NFD (as some keyboards and clients produce it), the password is the same everywhere."""
    address = f"utf-{uuid.uuid4().hex[:8]}@sasl.test"
    create_user(embedded_stack, address, "caf\u00e9-p\u00e4ssword")
    typed = "cafe\u0301-pa\u0308ssword"
    with imaplib.IMAP4("127.0.0.1", embedded_stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        plain = b"\0" + address.encode() + b"\0" + typed.encode()
        assert imap.authenticate("PLAIN", lambda _: plain)[0] == "OK"
    with smtplib.SMTP("127.0.0.1", embedded_stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("client.test")
        # smtplib's login() and auth() send only ASCII: the exchange by hand.
        reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(plain).decode())
        assert reply[0] == 235, reply
    pop = poplib.POP3("127.0.0.1", embedded_stack.ports.pop3, timeout=30)
    try:
        pop.stls(insecure_tls())
        pop.utf8()
        pop.user(address)
        assert pop.pass_(typed).startswith(b"+OK")
    finally:
        pop.quit()
