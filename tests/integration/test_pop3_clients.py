"""POP3 with real clients against the whole system: poplib, fetchmail and getmail6 download
and delete a maildrop; SCRAM-SHA-256 over the wire; the shared lockout answers [LOGIN-DELAY]."""

from __future__ import annotations

import base64
import imaplib
import poplib
import socket
import subprocess
import uuid
from pathlib import Path

from postmesh.common.devstack import Stack
from postmesh.common.sasl.client import ScramClient
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    imap_fetch_all,
    insecure_tls,
    sample_message,
    submit,
)


def _maildrop(stack: Stack, prefix: str, count: int) -> tuple[str, str, list[bytes]]:
    marker = uuid.uuid4().hex
    user, password = f"{prefix}-{marker[:8]}@example.test", f"{prefix}-pw-1"
    create_user(stack, user, password)
    originals = [sample_message(user, user, f"{marker}-{i}") for i in range(count)]
    for msg in originals:
        submit(stack, user, password, msg)
    wait_for(
        lambda: len(imap_fetch_all(stack, user, password)) == count or None,
        what=f"{count} messages",
    )
    return user, password, originals


def test_poplib_downloads_and_deletes_over_stls(stack: Stack) -> None:
    user, password, originals = _maildrop(stack, "poplib", 3)
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    pop.stls(context=insecure_tls())
    assert pop.capa()["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    pop.user(user)
    pop.pass_(password)
    count, _ = pop.stat()
    assert count == 3
    uids = [line.split()[1] for line in pop.uidl()[1]]
    assert len(set(uids)) == 3
    got = [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
    for original in originals:
        assert any(g.endswith(original) for g in got), "message changed through POP3"
    for i in range(1, count + 1):
        pop.dele(i)
    assert pop.quit().startswith(b"+OK")
    assert imap_fetch_all(stack, user, password) == []


def test_fetchmail_over_implicit_tls_downloads_and_deletes(stack: Stack, tmp_path: Path) -> None:
    user, password, originals = _maildrop(stack, "fetchmail-s", 2)
    out_dir = tmp_path / "delivered"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'poll 127.0.0.1 port {stack.ports.pop3s} protocol pop3 user "{user}" '
        f'password "{password}" ssl sslproto tls1.2+ sslcertck '
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
        assert any(d.endswith(original.replace(b"\r\n", b"\n")) for d in delivered)
    assert imap_fetch_all(stack, user, password) == []


def test_getmail6_downloads_and_deletes(stack: Stack, tmp_path: Path) -> None:
    user, password, originals = _maildrop(stack, "getmail", 3)
    out_dir = tmp_path / "delivered"
    out_dir.mkdir()
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {stack.ports.pop3s}\n"
        f"username = {user}\n"
        f"password = {password}\n"
        f"ca_certs = {stack.data_dir / 'tls-cert.pem'}\n"
        "ssl_cert_hostname = localhost\n"
        # getmail's Maildir destination refuses to run as root (as these tests may); an external
        # MDA may, when allowed.
        "[destination]\n"
        "type = MDA_external\n"
        "path = /bin/sh\n"
        f'arguments = ("-c", "cat > \'{out_dir}\'/$$.$(date +%s%N)")\n'
        "allow_root_commands = true\n"
        "[options]\n"
        "delete = true\n"
        "read_all = true\n"
        "received = false\n"
        "delivered_to = false\n"
    )
    result = subprocess.run(
        ["getmail", "--getmaildir", str(tmp_path), "--rcfile", str(rc)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = [p.read_bytes() for p in out_dir.iterdir()]
    assert len(files) == 3, result.stdout
    for original in originals:
        assert any(f.endswith(original.replace(b"\r\n", b"\n")) for f in files)
    assert imap_fetch_all(stack, user, password) == []


class _Line:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"+OK")

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.file.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_scram_sha_256_login_over_the_wire(stack: Stack) -> None:
    user, password, _ = _maildrop(stack, "scram", 1)
    conn = _Line(stack.ports.pop3)
    try:
        client = ScramClient(user, password)
        first = conn.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
        assert first.startswith(b"+ "), first
        final = conn.cmd(
            base64.b64encode(client.final(base64.b64decode(first[2:].strip()))).decode()
        )
        assert final.startswith(b"+ "), final
        assert client.verify(base64.b64decode(final[2:].strip())), "server signature is wrong"
        assert conn.cmd("").startswith(b"+OK Logged in, 1 messages")
        assert conn.cmd("STAT").startswith(b"+OK 1 ")
        assert conn.cmd("QUIT").startswith(b"+OK")
    finally:
        conn.close()
    # A wrong password fails the proof check in auth.
    conn = _Line(stack.ports.pop3)
    try:
        client = ScramClient(user, "not-the-password")
        first = conn.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.first()).decode())
        final = conn.cmd(
            base64.b64encode(client.final(base64.b64decode(first[2:].strip()))).decode()
        )
        assert final == b"-ERR [AUTH] Authentication failed.\r\n"
    finally:
        conn.close()


def test_repeated_failures_lock_the_account_across_connections(stack: Stack) -> None:
    user, password, _ = _maildrop(stack, "lockout", 0)
    # Ten failures (auth's default account threshold), three per connection at most.
    failures = 0
    while failures < 10:
        conn = _Line(stack.ports.pop3)
        for _ in range(min(3, 10 - failures)):
            assert conn.cmd(f"USER {user}").startswith(b"+OK")
            assert conn.cmd("PASS wrong").startswith(b"-ERR [AUTH] ")
            failures += 1
        conn.close()
    conn = _Line(stack.ports.pop3)
    try:
        assert conn.cmd(f"USER {user}").startswith(b"+OK")
        answer = conn.cmd(f"PASS {password}")
        assert answer.startswith(b"-ERR [LOGIN-DELAY] Too many failed logins; try again in ")
    finally:
        conn.close()


def test_a_message_imaplib_appends_with_lf_line_ends_is_one_size_everywhere(
    stack: Stack,
) -> None:
    """``imaplib.append(..., msg.as_bytes())`` sends LF line ends. The store keeps them as CRLF,
    so IMAP's RFC822.SIZE and body, POP3's LIST size and what RETR sends agree (they differed
    by one octet a line: LIST said the LF size, RETR sent CRLF)."""
    from email.message import EmailMessage

    marker = uuid.uuid4().hex[:8]
    user, password = f"lf-{marker}@example.test", "lf-pw-1"
    create_user(stack, user, password)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, user, f"written by a script {marker}"
    msg.set_content("first line\nsecond line\n")
    lf = msg.as_bytes()
    assert b"\r\n" not in lf and lf.count(b"\n") > 5
    crlf = lf.replace(b"\n", b"\r\n")
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        typ, _ = imap.append("INBOX", None, None, lf)
        assert typ == "OK"
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple)
        assert data[0][1] == crlf
        assert f"RFC822.SIZE {len(crlf)} ".encode() in data[0][0]
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    pop.stls(context=insecure_tls())
    pop.user(user)
    pop.pass_(password)
    assert pop.list()[1] == [b"1 %d" % len(crlf)]
    assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == crlf
    pop.quit()
