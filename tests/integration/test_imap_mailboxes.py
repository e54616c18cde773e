"""IMAP mailbox management on the real stack (embedded, and Kafka + FerretDB), with imaplib:
CREATE/RENAME/DELETE/SUBSCRIBE, LIST-EXTENDED with LIST-STATUS, STATUS, QUOTA, and a selected
mailbox deleted by another session."""

from __future__ import annotations

import imaplib
import subprocess
import uuid
from pathlib import Path

import pytest

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    insecure_tls,
    sample_message,
    submit,
)


def _login(stack: Stack, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", stack.ports.imap)
    imap.starttls(insecure_tls())
    imap.login(user, password)
    return imap


def _extended_list(imap: imaplib.IMAP4, *args: str) -> tuple[list[bytes], list[bytes]]:
    """LIST with RFC 5258 arguments imaplib cannot express; its LIST and STATUS lines."""
    typ, dat = imap._simple_command("LIST", *args)  # type: ignore[attr-defined]
    assert typ == "OK", dat
    _, lists = imap._untagged_response(typ, dat, "LIST")  # type: ignore[attr-defined]
    _, statuses = imap.response("STATUS")
    return [x for x in lists if x], [x for x in statuses if x]


def _status(imap: imaplib.IMAP4, mailbox: str, items: str) -> bytes:
    typ, dat = imap.status(mailbox, items)
    assert typ == "OK", dat
    assert isinstance(dat[0], bytes), dat
    return dat[0]


def test_create_rename_delete_subscribe_list_status_round_trip(stack: Stack) -> None:
    user, password = f"boxes-{uuid.uuid4().hex[:8]}@example.test", "boxes-pw-1"
    create_user(stack, user, password)
    imap = _login(stack, user, password)
    try:
        assert imap.create("Projects/2026/Q1")[0] == "OK"
        assert imap.create("Projects/2026/Q1") == (
            "NO",
            [b"[ALREADYEXISTS] Mailbox already exists: Projects/2026/Q1"],
        )
        assert imap.subscribe("Projects/2026/Q1")[0] == "OK"
        lists, statuses = _extended_list(
            imap, '""', '"Projects*"', "RETURN", "(SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT))"
        )
        assert lists == [
            b'(\\HasChildren) "/" "Projects"',
            b'(\\HasChildren) "/" "Projects/2026"',
            b'(\\HasNoChildren \\Subscribed) "/" "Projects/2026/Q1"',
        ]
        assert statuses == [
            b'"Projects" (MESSAGES 0 UIDNEXT 1)',
            b'"Projects/2026" (MESSAGES 0 UIDNEXT 1)',
            b'"Projects/2026/Q1" (MESSAGES 0 UIDNEXT 1)',
        ]
        # Rename the hierarchy: children and the subscription follow.
        assert imap.rename("Projects", "Done")[0] == "OK"
        lists, _ = _extended_list(imap, "(SUBSCRIBED)", '""', "*")
        assert b'(\\HasNoChildren \\Subscribed) "/" "Done/2026/Q1"' in lists
        assert not [x for x in lists if b"Projects" in x]
        # Special-use on CREATE (RFC 6154 §3).
        typ, _ = imap._simple_command("CREATE", "Receipts", "(USE (\\Archive))")  # type: ignore[attr-defined]
        assert typ == "OK"
        lists, _ = _extended_list(
            imap, "(SPECIAL-USE)", '""', "Receipts", "RETURN", "(SPECIAL-USE)"
        )
        assert lists == [b'(\\HasNoChildren \\Archive) "/" "Receipts"']
        # DELETE of a parent keeps it as \Noselect; deleting that again is [HASCHILDREN].
        assert imap.delete("Done")[0] == "OK"
        typ, listing = imap.list('""', "Done")
        assert listing == [b'(\\Noselect \\HasChildren) "/" "Done"']
        typ, dat = imap.select("Done")
        assert (typ, dat) == ("NO", [b"[NONEXISTENT] Mailbox is not selectable: Done"])
        assert imap.delete("Done") == (
            "NO",
            [b"[HASCHILDREN] Mailbox has inferior mailboxes: Done"],
        )
        assert imap.delete("INBOX") == ("NO", [b"[CANNOT] INBOX cannot be deleted"])
        assert imap.delete("Done/2026/Q1")[0] == "OK"
        assert imap.unsubscribe("Done/2026/Q1")[0] == "OK"
        # Quota root of every mailbox is the user's one root.
        typ, quota = imap.getquotaroot("INBOX")
        assert typ == "OK" and quota[0][0].startswith(b'"INBOX"')  # type: ignore[index]
    finally:
        imap.logout()


def test_rename_inbox_moves_delivered_mail(stack: Stack) -> None:
    user, password = f"inbox-{uuid.uuid4().hex[:8]}@example.test", "inbox-pw-1"
    create_user(stack, user, password)
    imap = _login(stack, user, password)
    try:
        submit(stack, user, password, sample_message(user, user, uuid.uuid4().hex))
        wait_for(
            lambda: True if b"MESSAGES 1" in _status(imap, "INBOX", "(MESSAGES)") else None,
            what="the delivery",
        )
        assert imap.rename("INBOX", "Before-2027")[0] == "OK"
        assert _status(imap, "INBOX", "(MESSAGES)") == b'"INBOX" (MESSAGES 0)'
        moved = _status(imap, "Before-2027", "(MESSAGES UNSEEN SIZE DELETED)")
        assert moved.startswith(b'"Before-2027" (MESSAGES 1 UNSEEN 1 SIZE ') and moved.endswith(
            b" DELETED 0)"
        )
    finally:
        imap.logout()


def test_selected_mailbox_deleted_by_another_session(stack: Stack) -> None:
    user, password = f"gone-{uuid.uuid4().hex[:8]}@example.test", "gone-pw-1"
    create_user(stack, user, password)
    admin, victim = _login(stack, user, password), _login(stack, user, password)
    try:
        assert admin.create("Shared")[0] == "OK"
        assert victim.select("Shared")[0] == "OK"
        assert admin.delete("Shared")[0] == "OK"
        # The selected session is told BYE at its next command (Dovecot's behaviour).
        with pytest.raises(imaplib.IMAP4.abort):
            victim.noop()
    finally:
        admin.logout()


def test_mbsync_creates_folders_both_ways(stack: Stack, tmp_path: Path) -> None:
    """mbsync with ``Create Both``: a server folder appears in the Maildir, a Maildir folder is
    created on the server (CREATE), both listed afterwards."""
    user, password = f"mbsyncbox-{uuid.uuid4().hex[:8]}@example.test", "mbsyncbox-pw-1"
    create_user(stack, user, password)
    imap = _login(stack, user, password)
    try:
        assert imap.create("Projects/Alpha")[0] == "OK"
    finally:
        imap.logout()
    maildir = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        (maildir / "Local-Only" / sub).mkdir(parents=True)
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount test
Host 127.0.0.1
Port {stack.ports.imap}
User {user}
Pass "{password}"
SSLType STARTTLS
CertificateFile {stack.data_dir / "tls-cert.pem"}

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Sync Pull
SyncState *
"""
    )
    result = subprocess.run(
        ["mbsync", "-c", str(rc), "all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (maildir / "Projects" / "Alpha" / "cur").is_dir()
    assert (maildir / "Sent" / "cur").is_dir()
    imap = _login(stack, user, password)
    try:
        typ, listing = imap.list('""', "*")
    finally:
        imap.logout()
    assert typ == "OK"
    assert b'(\\HasNoChildren) "/" "Local-Only"' in listing
