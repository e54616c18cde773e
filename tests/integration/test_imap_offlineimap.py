"""OfflineIMAP (Debian's offlineimap3) keeping a local Maildir and the server in step, on both
backends: the first run mirrors every folder; then both sides change (a flag set and a message
deleted locally, a folder with a message created locally, new mail on the server) and one more run
carries each change across. The server is checked with imaplib.

Implicit TLS with the dev certificate as CA: offlineimap verifies the certificate only on that
path (its STARTTLS calls imaplib's starttls() without a context, which checks nothing), and only
against DNS names, hence ``localhost``."""

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


def _config(stack: Stack, user: str, password: str, root: Path) -> str:
    return f"""[general]
accounts = test
metadata = {root / "metadata"}
ui = basic
fsync = false

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {root / "mail"}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {stack.ports.imaps}
remoteuser = {user}
remotepass = {password}
ssl = yes
sslcacertfile = {stack.data_dir / "tls-cert.pem"}
"""


def _offlineimap(root: Path) -> str:
    result = subprocess.run(
        ["offlineimap", "-o", "-c", str(root / "offlineimaprc")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(root), "PATH": "/usr/bin:/bin"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERROR" not in output and "WARNING" not in output, output
    return output


def _server(stack: Stack, user: str, password: str) -> dict[str, dict[str, set[str]]]:
    """Folder -> subject -> flags, for every folder on the server."""
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        typ, listed = imap.list()
        assert typ == "OK"
        out: dict[str, dict[str, set[str]]] = {}
        for line in listed:
            assert isinstance(line, bytes)
            name = line.rsplit(b' "/" ', 1)[1].decode().strip('"')
            out[name] = folder_flags(imap, name)
        return out


def _local(folder: Path) -> dict[str, Path]:
    """Subject -> file of every message in one Maildir folder."""
    out: dict[str, Path] = {}
    for sub in ("new", "cur"):
        for f in (folder / sub).iterdir():
            m = re.search(rb"^Subject: (.*)$", f.read_bytes(), re.MULTILINE)
            assert m, f
            out[m.group(1).decode().strip()] = f
    return out


def _add_maildir_flag(f: Path, flag: str) -> None:
    """What a Maildir reader does when the user flags a message: the flag letters after ':2,'
    are rewritten in ASCII order (Maildir spec, "info" semantics) and the file moves to cur/."""
    base, _, flags = f.name.partition(":2,")
    f.rename(f.parent.parent / "cur" / f"{base}:2,{''.join(sorted(set(flags) | {flag}))}")


def test_offlineimap_two_way_sync(stack: Stack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:10]
    user, password = f"offlineimap-{marker}@example.test", "offlineimap-pw-1"
    create_user(stack, user, password)
    for name in ("keep", "flag", "delete"):
        submit(stack, user, password, sample_message(user, user, f"{marker}-{name}"))
    subject = {
        name: f"end to end {marker}-{name}" for name in ("keep", "flag", "delete", "new-on-server")
    }
    wait_for(lambda: len(_server(stack, user, password)["INBOX"]) == 3 or None, what="3 messages")

    (tmp_path / "offlineimaprc").write_text(_config(stack, user, password, tmp_path))
    _offlineimap(tmp_path)
    mail = tmp_path / "mail"
    before = _server(stack, user, password)
    # Every server folder has its Maildir, INBOX's three messages included.
    assert {p.name for p in mail.iterdir()} == set(before)
    local = _local(mail / "INBOX")
    assert set(local) == {subject["keep"], subject["flag"], subject["delete"]}

    # Local changes: a flag, a deletion, and a new folder holding a message.
    _add_maildir_flag(local[subject["flag"]], "F")
    local[subject["delete"]].unlink()
    projects = mail / "Projects"
    for sub in ("cur", "new", "tmp"):
        (projects / sub).mkdir(parents=True)
    written = (
        f"From: <{user}>\r\nTo: <{user}>\r\nSubject: filed locally {marker}\r\n"
        f"Message-ID: <local-{marker}@example.test>\r\n\r\nKept offline.\r\n"
    ).encode()
    (projects / "new" / f"1700000000.{marker}.localhost").write_bytes(written)
    # Server change: new mail.
    submit(stack, user, password, sample_message(user, user, f"{marker}-new-on-server"))
    wait_for(
        lambda: len(_server(stack, user, password)["INBOX"]) == 3 + 1 or None,
        what="the new message",
    )

    _offlineimap(tmp_path)

    after = _server(stack, user, password)
    assert set(after["INBOX"]) == {subject["keep"], subject["flag"], subject["new-on-server"]}
    assert "\\Flagged" in after["INBOX"][subject["flag"]]
    assert "\\Flagged" not in after["INBOX"][subject["keep"]]
    assert set(after) == set(before) | {"Projects"}
    assert set(after["Projects"]) == {f"filed locally {marker}"}
    assert set(_local(mail / "INBOX")) == set(after["INBOX"])
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        imap.select("Projects", readonly=True)
        typ, fetched = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(fetched[0], tuple)
        assert fetched[0][1] == written

    # Once in step, another run changes nothing on either side.
    _offlineimap(tmp_path)
    assert _server(stack, user, password) == after
    assert set(_local(mail / "INBOX")) == set(after["INBOX"])
