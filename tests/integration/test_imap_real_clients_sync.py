"""mbsync (isync) keeping a Maildir and the IMAP INBOX in step, both ways, on both backends:
new mail down, flags both ways, a local deletion expunged on the server, a message written
into the Maildir uploaded by APPEND (with APPENDUID, RFC 4315). This is the daily routine of
people who read mail offline."""

from __future__ import annotations

import imaplib
import re
import subprocess
import uuid
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    folder_flags,
    insecure_tls,
    sample_message,
    submit,
)


def _mbsync(tmp_path: Path, rc: Path) -> str:
    result = subprocess.run(
        ["mbsync", "-V", "-c", str(rc), "inbox"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _config(stack: Stack, user: str, password: str, maildir: Path) -> str:
    return f"""IMAPAccount test
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

Channel inbox
Far :remote:INBOX
Near :local:INBOX
Sync All
Create Both
Expunge Both
SyncState *
"""


def _server_view(stack: Stack, user: str, password: str) -> dict[str, set[str]]:
    """Subject -> flags of every message in the server's INBOX."""
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        return folder_flags(imap)


def _set_flag_on_server(stack: Stack, user: str, password: str, subject: str, flag: str) -> None:
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], data
        typ, _ = imap.uid("STORE", data[0].decode(), "+FLAGS", f"({flag})")
        assert typ == "OK"


def _local(maildir: Path) -> dict[str, tuple[Path, str]]:
    """Subject -> (file, Maildir flags) of every local message."""
    out: dict[str, tuple[Path, str]] = {}
    for sub in ("new", "cur"):
        for f in (maildir / "INBOX" / sub).iterdir():
            m = re.search(rb"^Subject: (.*)$", f.read_bytes(), re.MULTILINE)
            assert m, f
            flags = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
            out[m.group(1).decode().strip()] = (f, flags)
    return out


def test_mbsync_two_way_sync(stack: Stack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:10]
    user, password = f"sync-{marker}@example.test", "sync-pw-1"
    create_user(stack, user, password)
    for i in range(3):
        submit(stack, user, password, sample_message(user, user, f"{marker}-{i}"))
    subject = f"end to end {marker}"
    wait_for(lambda: len(_server_view(stack, user, password)) == 3 or None, what="3 messages")

    maildir = tmp_path / "mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(_config(stack, user, password, maildir))
    _mbsync(tmp_path, rc)
    local = _local(maildir)
    assert set(local) == {f"{subject}-{i}" for i in range(3)}

    # Local changes: message 0 read, message 1 deleted, a new message written (as a mail
    # client saving a draft or a sent copy does).
    seen_file, _ = local[f"{subject}-0"]
    seen_file.rename(maildir / "INBOX" / "cur" / (seen_file.name.split(":2,")[0] + ":2,S"))
    local[f"{subject}-1"][0].unlink()
    written = (
        f"From: <{user}>\r\nTo: <{user}>\r\nSubject: written locally {marker}\r\n"
        f"Message-ID: <local-{marker}@example.test>\r\n\r\nDraft text.\r\n"
    ).encode()
    (maildir / "INBOX" / "new" / f"1700000000.{marker}.localhost").write_bytes(written)
    # Server changes: new mail, and a flag set by another client.
    submit(stack, user, password, sample_message(user, user, f"{marker}-3"))
    wait_for(lambda: len(_server_view(stack, user, password)) == 4 or None, what="4 messages")
    _set_flag_on_server(stack, user, password, f"{subject}-2", "\\Flagged")

    _mbsync(tmp_path, rc)

    server = _server_view(stack, user, password)
    assert set(server) == {
        f"{subject}-0",  # \Seen pushed up
        f"{subject}-2",
        f"{subject}-3",
        f"written locally {marker}",  # APPENDed
    }, server
    assert "\\Seen" in server[f"{subject}-0"]
    assert "\\Seen" not in server[f"{subject}-3"]
    local = _local(maildir)
    assert set(local) == set(server)
    assert "F" in local[f"{subject}-2"][1]  # the server's \Flagged came down
    assert "S" in local[f"{subject}-0"][1]
    # The upload is the local file's content, line ends as IMAP wants them.
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"written locally {marker}"')
        assert typ == "OK" and data[0]
        typ, fetched = imap.uid("FETCH", data[0].decode(), "(BODY.PEEK[TEXT])")
        assert typ == "OK" and isinstance(fetched[0], tuple)
        assert fetched[0][1] == b"Draft text.\r\n"

    # A third run has nothing left to do and changes nothing.
    _mbsync(tmp_path, rc)
    assert _server_view(stack, user, password) == server
