"""MX listener over the wire: local delivery accepted, unknown users and relaying refused."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Edge

MESSAGE = (
    b"From: Carol <carol@remote.example>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"caf\xc3\xa9 8-bit body\r\n"
)


def _send_local(port: int) -> tuple[dict[str, str], tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        features = dict(s.esmtp_features)
        assert s.mail("carol@remote.example", ["BODY=8BITMIME"]) == (250, b"2.1.0 Ok")
        rcpt = s.rcpt("alice@example.org")
        data = s.data(MESSAGE)
    return features, rcpt, data


async def test_mx_accepts_local_user_and_publishes_record(edge: Edge) -> None:
    before_ms = int(time.time() * 1000)
    features, rcpt, data = await asyncio.to_thread(_send_local, edge.mx)

    assert features["size"] == str(64 * 1024)
    for keyword in ("8bitmime", "pipelining", "enhancedstatuscodes", "starttls", "smtputf8"):
        assert keyword in features, keyword
    assert "auth" not in features  # no AUTH on the MX by default
    assert rcpt == (250, b"2.1.5 Ok")
    code, text = data
    assert code == 250
    assert text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.rsplit(b" ", 1)[1].decode()

    [msg] = await edge.messages(1)
    assert msg.queue_id == queue_id
    assert msg.mail_from == "carol@remote.example"
    assert [r.address for r in msg.recipients] == ["alice@example.org"]
    assert msg.WhichOneof("content") == "inline_content"
    # The Received: header is prepended; the message follows byte for byte (dots unstuffed).
    received_end = msg.inline_content.index(b"\r\nFrom: ") + 2
    assert msg.inline_content[received_end:] == MESSAGE
    received = msg.inline_content[:received_end].decode()
    assert received.startswith("Received: from client.test (localhost [127.0.0.1])\r\n\t")
    assert f"by mx.test (Postmesh) with ESMTP id {queue_id}" in received
    assert "for <alice@example.org>;" in received
    assert msg.size == len(msg.inline_content)
    assert before_ms <= msg.received_at_ms <= int(time.time() * 1000)
    assert msg.body_type == "8BITMIME"
    assert not msg.smtputf8
    assert msg.client.helo == "client.test"
    assert msg.client.remote_ip == "127.0.0.1"
    assert msg.client.listener == "mx"
    assert not msg.client.tls
    assert msg.client.authenticated_user == ""


def _rcpt(port: int, *rcpts: str) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("carol@remote.example")
        return [s.rcpt(r) for r in rcpts]


async def test_mx_rejects_unknown_local_user(edge: Edge) -> None:
    [reply] = await asyncio.to_thread(_rcpt, edge.mx, "nobody@example.org")
    assert reply == (
        550,
        b"5.1.1 <nobody@example.org>: Recipient address rejected: User unknown",
    )


async def test_mx_refuses_relaying_for_unauthenticated_clients(edge: Edge) -> None:
    [reply] = await asyncio.to_thread(_rcpt, edge.mx, "dave@elsewhere.example")
    assert reply == (554, b"5.7.1 <dave@elsewhere.example>: Relay access denied")


async def test_mx_null_sender_and_postmaster(edge: Edge) -> None:
    def run() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("bounce.test")
            mail = s.docmd("MAIL FROM:<>")
            rcpt = s.docmd("RCPT TO:<Postmaster>")
            data = s.data(b"Subject: bounce\r\n\r\nreport\r\n")
        return mail, rcpt, data

    mail, rcpt, data = await asyncio.to_thread(run)
    assert mail == (250, b"2.1.0 Ok")
    assert rcpt == (250, b"2.1.5 Ok")
    assert data[0] == 250
    [msg] = await edge.messages(1)
    assert msg.mail_from == ""
    # RFC 5321 §4.5.1: the bare postmaster is this system's, which auth resolves.
    assert [r.address for r in msg.recipients] == ["postmaster"]


async def test_mx_bad_address_syntax(edge: Edge) -> None:
    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.command_encoding = "utf-8"
            return [
                s.docmd("MAIL FROM:<carol@@remote.example>"),
                s.docmd("MAIL FROM:<carol@remote.example>"),
                s.docmd("RCPT TO:<alice@exa mple.org>"),
                s.docmd("RCPT TO:<alice.@example.org>"),
                s.docmd("RCPT TO:<alice@example.org"),
                s.docmd("RCPT TO:<ålice@example.org>"),
                s.docmd("RCPT TO:<alice@example.org> FOO=bar"),
            ]

    replies = await asyncio.to_thread(run)
    assert replies[0] == (501, b"5.1.7 Bad sender address syntax")
    assert replies[1] == (250, b"2.1.0 Ok")
    assert replies[2][0] == 501  # a space ends the path: the rest is not a parameter
    assert replies[3] == (501, b"5.1.3 Bad recipient address syntax")
    assert replies[4] == (501, b"5.5.4 Syntax error in parameters or arguments")
    assert replies[5] == (553, b"5.6.7 Non-ASCII addresses require the SMTPUTF8 parameter")
    assert replies[6] == (555, b"5.5.4 Unsupported option: FOO")


async def test_mx_smtputf8_and_dsn_parameters(edge: Edge) -> None:
    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.command_encoding = "utf-8"
            mail = s.docmd("MAIL FROM:<jösé@remote.example> SMTPUTF8 RET=HDRS ENVID=a+2Bb")
            assert mail == (250, b"2.1.0 Ok")
            rcpt = (
                "RCPT TO:<alice@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice+40example.org"
            )
            assert s.docmd(rcpt) == (250, b"2.1.5 Ok")
            return s.data("Subject: ünïcode\r\n\r\nhi\r\n".encode())

    code, _ = await asyncio.to_thread(run)
    assert code == 250
    [msg] = await edge.messages(1)
    assert msg.mail_from == "jösé@remote.example"
    assert msg.smtputf8
    assert msg.ret == "HDRS"
    assert msg.envid == "a+b"
    assert list(msg.recipients[0].notify) == ["FAILURE", "DELAY"]
    assert msg.recipients[0].orcpt == "rfc822;alice+40example.org"
    assert b"with UTF8SMTP id" in msg.inline_content


async def test_mx_backend_failure_on_rcpt_is_temporary(edge: Edge) -> None:
    edge.backend.auth_down = True
    [reply] = await asyncio.to_thread(_rcpt, edge.mx, "alice@example.org")
    assert reply == (451, b"4.3.0 <alice@example.org>: Temporary lookup failure")


async def test_mx_rejects_invalid_utf8_in_commands(edge: Edge) -> None:
    def run() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO bad\xff.test\r\n")
            out = [f.readline()]
            sock.sendall(b"EHLO client.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(b"MAIL FROM:<caf\xe9@remote.example> SMTPUTF8\r\n")
            out.append(f.readline())
            return out

    assert await asyncio.to_thread(run) == [
        b"501 5.5.4 Syntax: EHLO hostname\r\n",
        b"501 5.6.7 Invalid UTF-8 in address or parameters\r\n",
    ]
