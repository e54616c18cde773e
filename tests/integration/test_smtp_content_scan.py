"""The content scan against a real rspamd from Debian (issue 9 item 5): an smtp-edge replica of
the embedded stack scans what reaches its MX. rspamd's GTUBE test patterns pick its action: a
reject is refused with 550 5.7.1 over the wire and stored nowhere; "add header" and "rewrite
subject" are accepted, marked (X-Spam: Yes, the sender's own X-Spam removed) and filed into
Junk; clean mail reaches INBOX marked X-Spam-Status: No; with rspamd gone the edge fails open
(the default) and the message arrives unscanned."""

from __future__ import annotations

import imaplib
import smtplib
import uuid
from collections.abc import Iterator

import pytest

from postmesh.common.devstack import Stack
from tests.integration.infra.ports import free_port
from tests.integration.infra.rspamd import (
    GTUBE_ADD_HEADER,
    GTUBE_REJECT,
    GTUBE_REWRITE_SUBJECT,
    Rspamd,
)
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

USER, PASSWORD = f"scanned-{uuid.uuid4().hex[:6]}@example.test", "scan-pass-1"


@pytest.fixture(scope="module")
def rspamd(quiet_dns: dict[str, str]) -> Iterator[Rspamd]:
    with Rspamd(quiet_dns["POSTMESH_DNS_SERVERS"]) as server:
        yield server


@pytest.fixture(scope="module")
def scanning_mx(embedded_stack: Stack, rspamd: Rspamd) -> Iterator[int]:
    """An smtp-edge replica with the scan on; yields its MX port."""
    create_user(embedded_stack, USER, PASSWORD)
    ports = {
        "POSTMESH_SMTP_MX_PORT": str(free_port()),
        "POSTMESH_SMTP_SUBMISSION_PORT": str(free_port()),
        "POSTMESH_SMTP_SUBMISSIONS_PORT": str(free_port()),
        "POSTMESH_SMTP_RSPAMD_URL": rspamd.url,
    }
    with embedded_stack.replica("smtp-edge", "smtp-edge-rspamd", free_port(), ports):
        yield int(ports["POSTMESH_SMTP_MX_PORT"])
    print(f"----- rspamd log -----\n{rspamd.log_tail()}")


def message(marker: str, body: str, extra: str = "") -> bytes:
    return (
        f"From: Mallory <mallory@example.net>\r\nTo: <{USER}>\r\nSubject: scan {marker}\r\n"
        f"Message-ID: <{marker}@example.net>\r\nDate: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


def send(port: int, msg: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.example.net")
        s.mail("mallory@example.net")
        s.rcpt(USER)
        try:
            return s.data(msg)
        except smtplib.SMTPDataError as e:
            error = e.smtp_error
            return e.smtp_code, error if isinstance(error, bytes) else error.encode()


def fetch(stack: Stack, mailbox: str, marker: str) -> bytes | None:
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(USER, PASSWORD)
        assert imap.select(mailbox, readonly=True)[0] == "OK"
        _, data = imap.search(None, "HEADER", "Message-ID", f"<{marker}@example.net>")
        ids = data[0].split() if data and data[0] else []
        if not ids:
            return None
        _, fetched = imap.fetch(ids[-1], "(BODY.PEEK[])")
        part = fetched[0]
        assert isinstance(part, tuple)
        return part[1]


def header(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0]


def test_reject_is_refused_over_the_wire(embedded_stack: Stack, scanning_mx: int) -> None:
    marker = uuid.uuid4().hex[:10]
    code, text = send(scanning_mx, message(marker, GTUBE_REJECT))
    assert (code, text[:6]) == (550, b"5.7.1 "), text
    # A clean message sent after it arrives, and the rejected one is nowhere.
    clean = uuid.uuid4().hex[:10]
    assert send(scanning_mx, message(clean, "Nothing to see."))[0] == 250
    wait_for(lambda: fetch(embedded_stack, "INBOX", clean), what="the clean message")
    assert fetch(embedded_stack, "INBOX", marker) is None
    assert fetch(embedded_stack, "Junk", marker) is None


def test_clean_mail_reaches_inbox_marked_not_spam(embedded_stack: Stack, scanning_mx: int) -> None:
    marker = uuid.uuid4().hex[:10]
    assert send(scanning_mx, message(marker, "Lunch at noon?"))[0] == 250
    stored = wait_for(lambda: fetch(embedded_stack, "INBOX", marker), what="the message")
    assert b"\r\nX-Spam-Status: No, score=" in header(stored)
    assert b"\r\nX-Spam: Yes" not in header(stored)


def test_spam_is_marked_and_filed_into_junk(embedded_stack: Stack, scanning_mx: int) -> None:
    marker = uuid.uuid4().hex[:10]
    forged = "X-Spam: No\r\nX-Spam-Status: No, score=-50.00\r\n"
    assert send(scanning_mx, message(marker, GTUBE_ADD_HEADER, forged))[0] == 250
    stored = wait_for(lambda: fetch(embedded_stack, "Junk", marker), what="the message in Junk")
    head = header(stored)
    assert b"\r\nX-Spam: Yes\r\n" in head and b"X-Spam: No" not in head
    assert b"X-Spam-Status: Yes, score=" in head and b"GTUBE" in head
    assert b"score=-50" not in head
    assert fetch(embedded_stack, "INBOX", marker) is None


def test_rewritten_subject(embedded_stack: Stack, scanning_mx: int) -> None:
    marker = uuid.uuid4().hex[:10]
    assert send(scanning_mx, message(marker, GTUBE_REWRITE_SUBJECT))[0] == 250
    stored = wait_for(lambda: fetch(embedded_stack, "Junk", marker), what="the message in Junk")
    subjects = [h for h in header(stored).split(b"\r\n") if h.lower().startswith(b"subject:")]
    assert len(subjects) == 1 and b"SPAM" in subjects[0] and marker.encode() in subjects[0]


def test_rspamd_gone_fails_open(embedded_stack: Stack, scanning_mx: int, rspamd: Rspamd) -> None:
    rspamd.stop()  # last in the module: the fixture's exit finds it stopped (stop is idempotent)
    marker = uuid.uuid4().hex[:10]
    assert send(scanning_mx, message(marker, "Still delivered."))[0] == 250
    stored = wait_for(lambda: fetch(embedded_stack, "INBOX", marker), what="the message")
    assert b"X-Spam-Status" not in header(stored)
