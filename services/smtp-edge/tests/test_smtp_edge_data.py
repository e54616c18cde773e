"""DATA over the wire: bare newlines, size limits, claim check, durability, pipelining."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Edge, EdgeFactory


def _raw_data(port: int, payload: bytes) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """Send ``payload`` verbatim after DATA (smtplib's data() would repair line endings)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("carol@remote.example")
        s.rcpt("alice@example.org")
        s.putcmd("DATA")
        assert s.getreply() == (354, b"End data with <CR><LF>.<CR><LF>")
        s.send(payload)
        reply = s.getreply()
        return reply, s.noop()


async def test_bare_lf_is_rejected(edge: Edge) -> None:
    reply, after = await asyncio.to_thread(
        _raw_data, edge.mx, b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n"
    )
    assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
    assert after == (250, b"2.0.0 Ok")  # the session goes on
    assert await edge.records(0) == []


async def test_bare_cr_is_rejected(edge: Edge) -> None:
    reply, _ = await asyncio.to_thread(_raw_data, edge.mx, b"Subject: x\r\n\r\nab\rcd\r\n.\r\n")
    assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
    assert await edge.records(0) == []


async def test_smuggled_message_is_neither_split_nor_queued(edge: Edge) -> None:
    """``LF . CR LF`` is not an end marker: the would-be second message stays content of the
    first, which is then rejected whole. One reply, nothing on the bus."""
    payload = (
        b"Subject: innocent\r\n\r\nhello\n.\r\n"
        b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nwire the money\r\n.\r\n"
    )
    reply, after = await asyncio.to_thread(_raw_data, edge.mx, payload)
    assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
    assert after == (250, b"2.0.0 Ok")
    assert await edge.records(0) == []


async def test_oversize_message_is_rejected(edge: Edge) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 80  # ~80 KiB > 64 KiB

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            declared = s.mail("carol@remote.example", [f"SIZE={len(big)}"])
            s.mail("carol@remote.example")  # no SIZE: found out while reading DATA
            s.rcpt("alice@example.org")
            return declared, s.data(big), s.noop()

    declared, data, after = await asyncio.to_thread(run)
    assert declared == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    assert data == (552, b"5.3.4 Message size exceeds fixed maximum message size")
    assert after == (250, b"2.0.0 Ok")
    assert await edge.records(0) == []


async def test_large_message_goes_to_store_claim_check(edge: Edge) -> None:
    body = b"Subject: attachment\r\n\r\n" + (b"y" * 76 + b"\r\n") * 400  # ~31 KiB > 8 KiB

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@remote.example")
            s.rcpt("alice@example.org")
            return s.data(body)

    code, text = await asyncio.to_thread(run)
    assert code == 250
    [msg] = await edge.messages(1)
    assert text == f"2.0.0 Ok: queued as {msg.queue_id}".encode()
    assert msg.WhichOneof("content") == "blob_id"
    stored = edge.backend.blobs[msg.blob_id]
    assert msg.blob_id == hashlib.sha256(stored).hexdigest()
    assert stored.startswith(b"Received: from client.test ")
    assert stored.endswith(b"\r\n" + body)
    assert msg.size == len(stored)


async def test_bus_failure_answers_451_and_queues_nothing(make_edge: EdgeFactory) -> None:
    edge = await make_edge(failing_bus=True)

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@remote.example")
            s.rcpt("alice@example.org")
            return s.data(b"Subject: x\r\n\r\nhi\r\n"), s.noop()

    data, after = await asyncio.to_thread(run)
    assert data == (451, b"4.3.0 Temporary failure, please retry")
    assert after == (250, b"2.0.0 Ok")
    assert await edge.records(0) == []


async def test_store_failure_answers_451_and_queues_nothing(edge: Edge) -> None:
    edge.backend.store_down = True

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@remote.example")
            s.rcpt("alice@example.org")
            return s.data(b"Subject: x\r\n\r\n" + b"z" * 20_000 + b"\r\n")

    assert await asyncio.to_thread(run) == (451, b"4.3.0 Temporary failure, please retry")
    assert edge.backend.blobs == {}
    assert await edge.records(0) == []


async def test_pipelined_transaction_in_one_write(edge: Edge) -> None:
    """RFC 2920: a whole transaction and QUIT in one packet; bytes after the end marker are
    commands, not message."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", edge.mx), timeout=10) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 mx.test ESMTP Postmesh")
            sock.sendall(b"EHLO client.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(
                b"MAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                b"RCPT TO:<bob@example.org>\r\nDATA\r\n"
                b"Subject: one\r\n\r\n..dot\r\n.\r\nRSET\r\nQUIT\r\n"
            )
            return f.read()

    replies = (await asyncio.to_thread(run)).decode().split("\r\n")
    assert replies[:4] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert replies[4].startswith("250 2.0.0 Ok: queued as ")
    assert replies[5:] == ["250 2.0.0 Ok", "221 2.0.0 Bye", ""]
    [msg] = await edge.messages(1)
    assert [r.address for r in msg.recipients] == ["alice@example.org", "bob@example.org"]
    assert "for <" not in msg.inline_content.decode()  # several recipients: no "for" clause
    assert msg.inline_content.endswith(b"\r\nSubject: one\r\n\r\n.dot\r\n")
