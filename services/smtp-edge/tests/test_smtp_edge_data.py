"""DATA over the wire: bare newlines, size limits, claim check, durability, pipelining."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest

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


async def test_bare_lf_is_rejected_in_reject_mode(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_bare_newline="reject")
    reply, after = await asyncio.to_thread(
        _raw_data, edge.mx, b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n"
    )
    assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
    assert after == (250, b"2.0.0 Ok")  # the session goes on
    assert await edge.records(0) == []


async def test_bare_lf_lines_are_stored_as_crlf_lines(edge: Edge) -> None:
    """The default (Postfix 3.9 normalize): a bare-LF line is a line, dot-unstuffed too."""
    assert edge.settings.smtp_bare_newline == "normalize"
    reply, after = await asyncio.to_thread(
        _raw_data, edge.mx, b"Subject: x\n\nline one\n..dot\nline two\r\n.\r\n"
    )
    assert reply[0] == 250
    assert after == (250, b"2.0.0 Ok")
    [msg] = await edge.messages(1)
    assert msg.inline_content.endswith(b"\r\nSubject: x\r\n\r\nline one\r\n.dot\r\nline two\r\n")


@pytest.mark.parametrize("mode", ["normalize", "reject"])
async def test_bare_cr_is_rejected(make_edge: EdgeFactory, mode: str) -> None:
    edge = await make_edge(smtp_bare_newline=mode)
    reply, _ = await asyncio.to_thread(_raw_data, edge.mx, b"Subject: x\r\n\r\nab\rcd\r\n.\r\n")
    assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
    assert await edge.records(0) == []


# End markers other MTAs have been fooled by (SEC Consult's SMTP smuggling research).
FAKE_END_MARKERS = [b"\n.\r\n", b"\n.\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r"]


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("marker", FAKE_END_MARKERS)
async def test_smuggled_message_is_neither_split_nor_queued(
    make_edge: EdgeFactory, mode: str, marker: bytes
) -> None:
    """A fake end marker never ends DATA: the would-be second message stays content of the
    first. One reply; with "reject" (or any bare CR) nothing is queued, with "normalize" the
    one message holds the smuggled commands as text and nothing else is queued."""
    edge = await make_edge(smtp_bare_newline=mode)
    payload = (
        b"Subject: innocent\r\n\r\nhello" + marker + b"MAIL FROM:<ceo@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nwire the money\r\n.\r\n"
    )
    reply, after = await asyncio.to_thread(_raw_data, edge.mx, payload)
    assert after == (250, b"2.0.0 Ok")  # the smuggled commands were never read as commands
    if mode == "reject" or b"\r" in marker.replace(b"\r\n", b""):
        assert reply == (550, b"5.6.0 Bare LF/CR not allowed")
        assert await edge.records(0) == []
        return
    assert reply[0] == 250
    [msg] = await edge.messages(1)
    assert [r.address for r in msg.recipients] == ["alice@example.org"]
    body = msg.inline_content.split(b"Subject: innocent\r\n\r\n", 1)[1]
    assert body == (
        b"hello\r\n\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
    )


async def test_smtplib_sendmail_of_lf_bytes_is_accepted_as_crlf(edge: Edge) -> None:
    """What the issue reported: smtplib sends bytes unchanged, so ``msg.as_bytes()`` goes out
    with bare LF line endings (and dot-stuffed after each LF)."""
    msg = EmailMessage()
    msg["From"] = "carol@remote.example"
    msg["To"] = "alice@example.org"
    msg["Subject"] = "lf"
    msg.set_content("first line\n.leading dot\nlast line\n")
    raw = msg.as_bytes()
    assert b"\r\n" not in raw

    def run() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            return s.sendmail("carol@remote.example", ["alice@example.org"], raw)

    assert await asyncio.to_thread(run) == {}
    [stored] = await edge.messages(1)
    content = stored.inline_content
    assert content.count(b"\n") == content.count(b"\r\n")
    # smtplib appends CRLF to data that does not end in one: one empty line more.
    assert content.endswith(b"\r\n" + raw.replace(b"\n", b"\r\n") + b"\r\n")


async def test_smtplib_sendmail_of_lf_bytes_is_refused_in_reject_mode(
    make_edge: EdgeFactory,
) -> None:
    edge = await make_edge(smtp_bare_newline="reject")
    raw = b"From: carol@remote.example\nSubject: lf\n\nbody\n"

    def run() -> None:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.sendmail("carol@remote.example", ["alice@example.org"], raw)

    with pytest.raises(smtplib.SMTPDataError) as e:
        await asyncio.to_thread(run)
    assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.6.0 Bare LF/CR not allowed")
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
