"""Session limits over the wire: recipients, errors, idle clients, command order."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Edge, EdgeFactory


async def test_too_many_recipients(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_max_recipients=2)

    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@remote.example")
            replies = [
                s.rcpt(r)
                for r in ("alice@example.org", "bob@example.org", "postmaster@example.org")
            ]
            replies.append(s.data(b"Subject: x\r\n\r\nhi\r\n"))
            return replies

    replies = await asyncio.to_thread(run)
    assert replies[:3] == [
        (250, b"2.1.5 Ok"),
        (250, b"2.1.5 Ok"),
        (452, b"4.5.3 Too many recipients"),
    ]
    assert replies[3][0] == 250
    [msg] = await edge.messages(1)
    assert [r.address for r in msg.recipients] == ["alice@example.org", "bob@example.org"]


async def test_a_refused_address_is_a_permanent_answer(make_edge: EdgeFactory) -> None:
    """auth's INVALID_ARGUMENT is no outage: 553 5.1.3, not a 451 retried for days."""
    edge = await make_edge()

    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@remote.example")
            return [s.rcpt("malformed@example.org"), s.rcpt("alice@example.org")]

    assert await asyncio.to_thread(run) == [
        (553, b"5.1.3 <malformed@example.org>: Recipient address rejected: invalid address"),
        (250, b"2.1.5 Ok"),
    ]


async def test_recipients_past_the_limit_are_not_errors(make_edge: EdgeFactory) -> None:
    """RFC 5321 §4.5.3.1.10: the 452s tell the client to send the rest in another transaction;
    counted as errors, 20 of them ended the session and lost the transaction with it."""
    edge = await make_edge(smtp_max_recipients=1, smtp_max_errors=3)

    def run() -> bytes:
        rcpts = b"RCPT TO:<alice@example.org>\r\n" * 30
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            sock.sendall(b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\n" + rcpts)
            sock.sendall(b"DATA\r\n")
            data = b""
            while b"354 " not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            sock.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            while chunk := sock.recv(4096):
                data += chunk
            return data

    codes = [line[:3] for line in (await asyncio.to_thread(run)).split(b"\r\n") if line]
    assert codes.count(b"452") == 29 and b"421" not in codes
    assert codes[-3:] == [b"354", b"250", b"221"]
    [msg] = await edge.messages(1)
    assert [r.address for r in msg.recipients] == ["alice@example.org"]


async def test_a_delivered_message_clears_the_error_count(make_edge: EdgeFactory) -> None:
    """The limit is of errors without delivering mail (as Postfix's smtpd_hard_error_limit)."""
    edge = await make_edge(smtp_max_errors=3)

    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            out = [s.docmd("FOO"), s.docmd("BAR")]
            s.mail("carol@remote.example")
            s.rcpt("alice@example.org")
            out.append(s.data(b"Subject: x\r\n\r\nhi\r\n"))
            out += [s.docmd("FOO"), s.docmd("BAR"), s.noop()]
            return out

    replies = await asyncio.to_thread(run)
    assert [code for code, _ in replies] == [500, 500, 250, 500, 500, 250]


async def test_unknown_commands_count_as_errors_then_421(make_edge: EdgeFactory) -> None:
    """aiosmtpd alone hung up after 5 unknown commands with a 502; the error limit decides."""
    edge = await make_edge(smtp_max_errors=8)

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            sock.sendall(b"EHLO client.test\r\n" + b"FOO\r\n" * 7 + b"NOOP\r\nBAR\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    lines = [line for line in (await asyncio.to_thread(run)).split(b"\r\n") if line]
    after_ehlo = lines[next(i for i, x in enumerate(lines) if x.startswith(b"250 ")) + 1 :]
    assert [line[:3] for line in after_ehlo] == [
        *[b"500"] * 7,
        b"250",
        b"500",
        b"421",
    ]


async def test_too_many_errors_disconnects(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_max_errors=3)

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            sock.sendall(
                b"EHLO client.test\r\nFOO\r\nMAIL FROM:<a@@b>\r\nRCPT TO:<x@y>\r\nNOOP\r\n"
            )
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

    lines = (await asyncio.to_thread(run)).decode().split("\r\n")
    assert lines[0].startswith("220 ")
    tail = [line for line in lines if not line.startswith(("220", "250"))]
    assert tail == [
        "500 5.5.2 Error: command not recognized",
        "501 5.1.7 Bad sender address syntax",
        "503 5.5.1 Error: need MAIL command",
        "421 4.7.0 mx.test Error: too many errors",
        "",
    ]


async def test_idle_client_gets_421_and_is_closed(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_idle_timeout_seconds=0.3)

    def run() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            start = time.monotonic()
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data, time.monotonic() - start

    data, elapsed = await asyncio.to_thread(run)
    assert data.split(b"\r\n")[1] == b"421 4.4.2 mx.test Error: timeout exceeded"
    assert elapsed < 5


async def test_command_order_and_helo(edge: Edge) -> None:
    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            out = [s.docmd("MAIL FROM:<carol@remote.example>")]
            out.append(s.helo("client.test"))
            out.append(s.docmd("RCPT TO:<alice@example.org>"))
            out.append(s.docmd("DATA"))
            out.append(s.docmd("MAIL FROM:<carol@remote.example> SIZE=10"))  # HELO: no params
            out.append(s.docmd("MAIL FROM:<carol@remote.example>"))
            out.append(s.docmd("MAIL FROM:<carol@remote.example>"))
            out.append(s.docmd("DATA"))
            out.append(s.docmd("VRFY alice@example.org"))
            out.append(s.docmd("GET / HTTP/1.1"))
            return out

    replies = await asyncio.to_thread(run)
    assert replies == [
        (503, b"5.5.1 Error: send HELO/EHLO first"),
        (250, b"mx.test"),
        (503, b"5.5.1 Error: need MAIL command"),
        (503, b"5.5.1 Error: need MAIL command"),
        (555, b"5.5.4 MAIL parameters need EHLO"),
        (250, b"2.1.0 Ok"),
        (503, b"5.5.1 Error: nested MAIL command"),
        (554, b"5.5.1 Error: no valid recipients"),
        (252, b"2.0.0 Cannot VRFY user, but will accept message"),
        (221, b"2.7.0 Error: this is an SMTP server; goodbye"),
    ]


async def test_too_many_auth_failures_disconnects(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_max_auth_failures=2)

    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.ehlo("laptop.test")
            # base64("\0alice\0nope")
            out = [s.docmd("AUTH PLAIN AGFsaWNlAG5vcGU=")]
            out.append(s.docmd("AUTH PLAIN AGFsaWNlAG5vcGU="))
            out.append(s.getreply())
            return out

    replies = await asyncio.to_thread(run)
    assert replies[0] == (535, b"5.7.8 Error: authentication failed")
    assert replies[1] == (535, b"5.7.8 Error: authentication failed")
    assert replies[2] == (421, b"4.7.0 mx.test Error: too many authentication failures")


async def test_shutdown_says_421_to_idle_clients(make_edge: EdgeFactory) -> None:
    edge = await make_edge()
    sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", edge.mx), 10)
    try:
        greeting = await asyncio.to_thread(sock.recv, 4096)
        assert greeting.startswith(b"220 ")
        await edge.service.stop()

        def drain() -> bytes:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data

        assert await asyncio.to_thread(drain) == b"421 4.3.2 mx.test Service shutting down\r\n"
    finally:
        sock.close()


async def test_shutdown_right_after_tls_quit(
    make_edge: EdgeFactory, client_tls: ssl.SSLContext
) -> None:
    """A TLS session that said QUIT may still be closing when the service stops."""
    edge = await make_edge()

    def run() -> tuple[int, bytes]:
        s = smtplib.SMTP_SSL("127.0.0.1", edge.submissions, context=client_tls, timeout=10)
        s.ehlo("laptop.test")
        reply = s.docmd("QUIT")
        s.close()
        return reply

    assert await asyncio.to_thread(run) == (221, b"2.0.0 Bye")
    start = time.monotonic()
    await edge.service.stop()
    assert time.monotonic() - start < 5
    assert not any(s.busy for s in edge.service.sessions)


async def test_helo_with_control_characters_is_refused(edge: Edge) -> None:
    def run() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            out = []
            for verb in ("HELO", "EHLO"):
                for name in ("a\x00b.example", "a\tb.example", "a\x7fb.example"):
                    s.send(f"{verb} {name}\r\n".encode())
                    out.append(s.getreply())
            out.append(s.docmd("MAIL FROM:<carol@remote.example>"))  # still not greeted
            out.append(s.helo("client.test"))
            return out

    replies = await asyncio.to_thread(run)
    assert replies[:3] == [(501, b"5.5.4 Syntax: HELO hostname")] * 3
    assert replies[3:6] == [(501, b"5.5.4 Syntax: EHLO hostname")] * 3
    assert replies[6] == (503, b"5.5.1 Error: send HELO/EHLO first")
    assert replies[7] == (250, b"mx.test")
