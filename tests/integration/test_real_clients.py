"""Real mail clients against the whole system: mbsync (isync) over IMAP with STARTTLS and
certificate verification, fetchmail over POP3 with STLS. They are what people run."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    imap_fetch_all,
    sample_message,
    submit,
)


def test_mbsync_pulls_the_mailbox_into_a_maildir(stack: Stack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    user, password = f"mbsync-{marker[:8]}@example.test", "mbsync-pw-1"
    create_user(stack, user, password)
    originals = [sample_message(user, user, f"{marker}-{i}") for i in range(3)]
    for msg in originals:
        submit(stack, user, password, msg)
    wait_for(lambda: len(imap_fetch_all(stack, user, password)) == 3 or None, what="3 messages")

    maildir = tmp_path / "mail"
    maildir.mkdir()
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

Channel inbox
Far :remote:INBOX
Near :local:INBOX
Sync Pull
Create Near
SyncState *
"""
    )
    result = subprocess.run(
        ["mbsync", "-c", str(rc), "inbox"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted((maildir / "INBOX" / "new").iterdir())
    assert len(files) == 3
    # mbsync stores LF line endings in the Maildir and adds its own X-TUID tracking header;
    # the bytes are otherwise unchanged.
    got = [
        b"".join(
            line
            for line in f.read_bytes().splitlines(keepends=True)
            if not line.startswith(b"X-TUID: ")
        )
        for f in files
    ]
    for original in originals:
        assert any(g.endswith(original.replace(b"\r\n", b"\n")) for g in got)


def test_fetchmail_downloads_and_deletes_over_pop3_with_stls(stack: Stack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    user, password = f"fetchmail-{marker[:8]}@example.test", "fetchmail-pw-1"
    create_user(stack, user, password)
    originals = [sample_message(user, user, f"{marker}-{i}") for i in range(2)]
    for msg in originals:
        submit(stack, user, password, msg)
    wait_for(lambda: len(imap_fetch_all(stack, user, password)) == 2 or None, what="2 messages")

    out_dir = tmp_path / "delivered"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 port {stack.ports.pop3} protocol pop3 user "{user}" '
        f'password "{password}" sslproto tls1.2+ sslcertck '
        f"sslcertfile {stack.data_dir / 'tls-cert.pem'} sslcommonname localhost "
        f"mda \"/bin/sh -c 'cat > {out_dir}/$$RANDOM$$RANDOM'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    delivered = [p.read_bytes() for p in out_dir.iterdir()]
    assert len(delivered) == 2
    for original in originals:
        body = original.replace(b"\r\n", b"\n")
        assert any(d.endswith(body) for d in delivered), "message changed through POP3"
    # Without "keep", fetchmail deleted them: DELE + QUIT expunged the mailbox.
    assert imap_fetch_all(stack, user, password) == []
