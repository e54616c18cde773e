"""SIGTERM on real processes, as Kubernetes sends it to a pod going away (issue 12 item 2):
IMAP sessions get BYE (RFC 9051 §7.1.5), POP3 sessions -ERR [SYS/TEMP] (RFC 3206) with nothing
deleted, and an SMTP transaction in the middle of DATA is allowed to finish and gets its 250
before the edge closes; every process then exits with status 0, and the message arrives."""

from __future__ import annotations

import io
import signal
import smtplib
import socket
import time
import uuid

from postmesh.common.devstack import Stack
from tests.integration.infra.ports import free_port
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import create_user, imap_fetch_all, submit


def _lines(port: int) -> tuple[socket.socket, io.BufferedReader]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock, sock.makefile("rb")


def test_sigterm_drains_imap_pop3_and_smtp_sessions(embedded_stack: Stack) -> None:
    stack = embedded_stack
    user, password = f"drain-{uuid.uuid4().hex[:8]}@example.test", "drain-pass-1"
    create_user(stack, user, password)
    submit(stack, user, password, b"Subject: already here\r\n\r\nkept\r\n")
    wait_for(lambda: imap_fetch_all(stack, user, password) or None, 30, "the first message")

    imap_env = {"POSTMESH_IMAP_PORT": str(free_port()), "POSTMESH_IMAPS_PORT": str(free_port())}
    pop_env = {"POSTMESH_POP3_PORT": str(free_port()), "POSTMESH_POP3S_PORT": str(free_port())}
    smtp_env = {
        "POSTMESH_SMTP_MX_PORT": str(free_port()),
        "POSTMESH_SMTP_SUBMISSION_PORT": str(free_port()),
        "POSTMESH_SMTP_SUBMISSIONS_PORT": str(free_port()),
    }
    with (
        stack.replica("imap-gw", "imap-gw-drain", free_port(), imap_env) as imap_proc,
        stack.replica("pop3-gw", "pop3-gw-drain", free_port(), pop_env) as pop_proc,
        stack.replica("smtp-edge", "smtp-edge-drain", free_port(), smtp_env) as smtp_proc,
    ):
        imap, imap_in = _lines(int(imap_env["POSTMESH_IMAP_PORT"]))
        imap_in.readline()
        imap.sendall(f'a LOGIN "{user}" "{password}"\r\nb SELECT INBOX\r\n'.encode())
        while not imap_in.readline().startswith(b"b OK"):
            pass

        pop, pop_in = _lines(int(pop_env["POSTMESH_POP3_PORT"]))
        pop_in.readline()
        pop.sendall(f"USER {user}\r\nPASS {password}\r\nDELE 1\r\n".encode())
        replies = [pop_in.readline() for _ in range(3)]
        assert all(r.startswith(b"+OK") for r in replies), replies

        smtp = smtplib.SMTP("127.0.0.1", int(smtp_env["POSTMESH_SMTP_SUBMISSION_PORT"]), timeout=30)
        smtp.login(user, password)  # loopback: plaintext AUTH is allowed (ADR 4)
        assert smtp.mail(user)[0] == 250 and smtp.rcpt(user)[0] == 250
        smtp.putcmd("DATA")
        assert smtp.getreply()[0] == 354
        marker = uuid.uuid4().hex
        smtp.send(f"Subject: in flight {marker}\r\n\r\nfirst half\r\n".encode())

        for proc in (imap_proc, pop_proc, smtp_proc):
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signals are handled while the transaction is still open

        bye = imap_in.readline()
        assert bye.startswith(b"* BYE"), bye
        assert pop_in.readline() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
        assert pop_in.readline() == b""  # closed
        smtp.send(b"second half\r\n.\r\n")
        code, text = smtp.getreply()
        assert code == 250 and b"queued as" in text, (code, text)
        # The transaction is done: the edge now says goodbye (421) and closes.
        code, _ = smtp.getreply()
        assert code == 421
        for proc in (imap_proc, pop_proc, smtp_proc):
            assert proc.wait(30) == 0
        imap.close()
        pop.close()
        smtp.close()

    def arrived() -> list[bytes] | None:
        got = imap_fetch_all(stack, user, password)
        return got if any(marker.encode() in m for m in got) else None

    got = wait_for(arrived, 30, "the message whose DATA ended during the shutdown")
    # POP3's DELE never reached UPDATE: the first message is still there.
    assert any(b"Subject: already here" in m for m in got)
