"""QRESYNC on the real stack (embedded) while the store's janitor removes tombstones: a client
resynchronising from a MODSEQ whose tombstones are gone still learns every expunge, through
GetChanges' expunged_incomplete and imap-gw's UID comparison (RFC 7162 3.2.5.2)."""

from __future__ import annotations

import imaplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postmesh.common.devstack import Stack
from tests.integration.stack import embedded_env, start_stack
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

USER, PASSWORD = "qresync@example.org", "janitor test pass"
RETENTION = 5  # seconds a tombstone is kept in this stack


@pytest.fixture(scope="module")
def janitor_stack(
    tmp_path_factory: pytest.TempPathFactory, quiet_dns: dict[str, str]
) -> Iterator[Stack]:
    env = {
        **embedded_env(),
        **quiet_dns,
        "POSTMESH_STORE_JANITOR_INTERVAL_SECONDS": "0.5",
        "POSTMESH_STORE_TOMBSTONE_RETENTION_SECONDS": str(RETENTION),
    }
    stack = start_stack(Path(tmp_path_factory.mktemp("janitor")), env)
    try:
        create_user(stack, USER, PASSWORD)
        yield stack
    finally:
        print(f"----- store log tail -----\n{stack.log_tail('store', 30)}")
        stack.stop()


def login(stack: Stack) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", stack.ports.imap)
    imap.starttls(insecure_tls())
    imap.login(USER, PASSWORD)
    imap.enable("QRESYNC")
    return imap


def expunge(imap: imaplib.IMAP4, uid: int) -> None:
    imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
    imap.expunge()


def vanished_since(stack: Stack, uidvalidity: int, modseq: int) -> list[bytes]:
    """SELECT INBOX (QRESYNC (uidvalidity modseq)) in a new session: its VANISHED lines."""
    imap = login(stack)
    try:
        imap.untagged_responses.pop("VANISHED", None)
        typ, _ = imap._simple_command("SELECT", f"INBOX (QRESYNC ({uidvalidity} {modseq}))")
        assert typ == "OK"
        return [v for v in imap.untagged_responses.pop("VANISHED", []) if isinstance(v, bytes)]
    finally:
        imap.logout()


def test_qresync_after_the_janitor_removed_tombstones(janitor_stack: Stack) -> None:
    imap = login(janitor_stack)
    for n in range(4):
        msg = f"Subject: m{n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nbody {n}\r\n".encode()
        imap.append("INBOX", None, None, msg)
    imap.select("INBOX")
    expunge(imap, 1)  # the client below knows of this one
    uidvalidity = int(imap.response("UIDVALIDITY")[1][0] or 0)
    imap.select("INBOX")
    highest = int(imap.response("HIGHESTMODSEQ")[1][0] or 0)
    assert uidvalidity and highest
    expunge(imap, 2)  # ... but not of this one
    imap.logout()
    # Tombstone 2 is still there: exactly what vanished since the client's MODSEQ.
    assert vanished_since(janitor_stack, uidvalidity, highest) == [b"(EARLIER) 2"]
    # Once the janitor removed it, every UID that is not live: a superset the client sorts out.
    deadline = time.monotonic() + RETENTION + 30
    answer: list[bytes] = []
    while time.monotonic() < deadline:
        answer = vanished_since(janitor_stack, uidvalidity, highest)
        if answer != [b"(EARLIER) 2"]:
            break
        time.sleep(0.5)
    assert answer == [b"(EARLIER) 1:2"]
