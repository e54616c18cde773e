"""One real message through every service: admin API -> SMTP submission -> bus -> delivery ->
store -> IMAP and POP3, on the embedded backends and on Kafka + FerretDB."""

from __future__ import annotations

import imaplib
import json
import poplib
import re
import smtplib
import ssl
import subprocess
import urllib.request
import uuid

import pytest

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for


def insecure_tls() -> ssl.SSLContext:
    """The stack's certificate is self-signed for development."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def create_user(stack: Stack, address: str, password: str) -> None:
    token = stack.admin_token()
    for path, body in (
        ("/api/v1/domains", {"name": address.rpartition("@")[2]}),
        ("/api/v1/users", {"address": address, "password": password}),
    ):
        req = urllib.request.Request(
            f"http://127.0.0.1:{stack.ports.admin}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 201
        except urllib.error.HTTPError as e:
            assert e.code == 409, e.read()  # the domain may exist from an earlier test


def sample_message(sender: str, rcpt: str, marker: str) -> bytes:
    body = [
        f"From: Sender <{sender}>",
        f"To: <{rcpt}>",
        f"Subject: end to end {marker}",
        f"Message-ID: <{marker}@example.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Hello from the integration test.",
        ".a line that starts with a dot (dot-stuffing on SMTP and POP3)",
        "..two dots",
        "trailing spaces   ",
        "x" * 900,
        "",
        "last line",
    ]
    return ("\r\n".join(body) + "\r\n").encode()


def submit(stack: Stack, user: str, password: str, message: bytes) -> None:
    """Send ``message`` from and to ``user`` through submission with STARTTLS and AUTH."""
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(user, password)
        assert smtp.sendmail(user, [user], message) == {}


def trace_and_original(fetched: bytes, original: bytes) -> bytes:
    """Asserts the stored message is trace header(s) prepended to the sent bytes, unchanged."""
    assert fetched.endswith(original), "message changed on its way through the system"
    trace = fetched[: len(fetched) - len(original)]
    assert trace.startswith(b"Received: "), trace[:200]
    return trace


def imap_fetch_all(stack: Stack, user: str, password: str) -> list[bytes]:
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        count = int(data[0] or 0)
        if count == 0:
            return []
        typ, fetched = imap.fetch(f"1:{count}", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        out: list[bytes] = []
        for item in fetched:
            if isinstance(item, tuple):
                size = int(re.search(rb"RFC822\.SIZE (\d+)", item[0]).group(1))  # type: ignore[union-attr]
                assert size == len(item[1])
                out.append(item[1])
        return out


def folder_flags(imap: imaplib.IMAP4, name: str = "INBOX") -> dict[str, set[str]]:
    """Subject -> flags of every message in one folder, read through a logged-in session:
    the permanent flags, without the session flag \\Recent (RFC 3501 §2.3.2), which this
    read-only look sees on whatever no session has selected since it arrived."""
    typ, data = imap.select(f'"{name}"', readonly=True)
    assert typ == "OK", (name, data)
    if int(data[0] or 0) == 0:
        return {}
    typ, fetched = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out: dict[str, set[str]] = {}
    for item in fetched:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            subject = item[1].decode().strip().removeprefix("Subject: ")
            out[subject] = set(flags.group(1).decode().split()) - {"\\Recent"} if flags else set()
    return out


def pop3_retr_all(stack: Stack, user: str, password: str) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    try:
        pop.stls(insecure_tls())
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        out = []
        for n in range(1, count + 1):
            _, lines, octets = pop.retr(n)
            msg = b"\r\n".join(lines) + b"\r\n"
            assert len(msg) == octets
            out.append(msg)
        return out
    finally:
        pop.quit()


def test_submission_to_imap_and_pop3_byte_for_byte(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    user, password = f"e2e-{marker[:8]}@example.test", "correct horse"
    create_user(stack, user, password)
    original = sample_message(user, user, marker)

    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("client.example.test")
        smtp.login(user, password)
        refused = smtp.sendmail(user, [user], original)
        assert refused == {}

    [via_imap] = wait_for(
        lambda: imap_fetch_all(stack, user, password) or None, what="the message in IMAP"
    )
    trace_and_original(via_imap, original)
    [via_pop3] = pop3_retr_all(stack, user, password)
    assert via_pop3 == via_imap


def test_mx_refuses_unknown_local_user_and_relaying(stack: Stack) -> None:
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        smtp.ehlo("peer.example.net")
        assert smtp.mail("someone@example.net")[0] == 250
        code, text = smtp.rcpt("no-such-user@example.test")
        assert code == 550 and b"5.1.1" in text
        code, text = smtp.rcpt("someone@elsewhere.example")
        assert code == 554 and b"5.7.1" in text


def test_mx_accepts_mail_for_local_user(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    user, password = f"mx-{marker[:8]}@example.test", "pw-mx-1234"
    create_user(stack, user, password)
    original = sample_message("someone@example.net", user, marker)
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        assert smtp.sendmail("someone@example.net", [user], original) == {}
    [via_imap] = wait_for(
        lambda: imap_fetch_all(stack, user, password) or None, what="the MX message in IMAP"
    )
    trace_and_original(via_imap, original)


def test_wrong_password_is_refused_everywhere(stack: Stack) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}@example.test"
    create_user(stack, user, "right-password")
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            smtp.login(user, "wrong-password")
        assert exc.value.smtp_code == 535
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap, pytest.raises(imaplib.IMAP4.error):
        imap.login(user, "wrong-password")
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    pop.user(user)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong-password")
    pop.close()


def test_swaks_submission_with_starttls_and_auth_login(stack: Stack) -> None:
    """A real command-line MTA client, as a new user would send with it."""
    marker = uuid.uuid4().hex
    user, password = f"swaks-{marker[:8]}@example.test", "swaks-pw-1"
    create_user(stack, user, password)
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{stack.ports.smtp_submission}",
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            user,
            "--auth-password",
            password,
            "--from",
            user,
            "--to",
            user,
            "--header",
            f"Subject: swaks {marker}",
            "--body",
            f"sent by swaks {marker}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    [msg] = wait_for(lambda: imap_fetch_all(stack, user, password) or None, what="swaks message")
    assert f"Subject: swaks {marker}".encode() in msg
    assert f"sent by swaks {marker}".encode() in msg


def test_new_user_gets_inbox_and_special_use_mailboxes_at_first_login(stack: Stack) -> None:
    user, password = f"fresh-{uuid.uuid4().hex[:8]}@example.test", "fresh-pw-1"
    create_user(stack, user, password)
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        typ, listing = imap.list()
        assert typ == "OK"
        lines = [x.decode() for x in listing if isinstance(x, bytes)]
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"0"]
    by_name = {line.rsplit(" ", 1)[-1].strip('"'): line for line in lines}
    assert set(by_name) >= {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert f"\\{name}" in by_name[name], by_name[name]  # RFC 6154 special-use attribute
