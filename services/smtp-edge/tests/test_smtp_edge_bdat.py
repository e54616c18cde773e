"""CHUNKING / BDAT (RFC 3030) over the wire: chunks taken byte for byte, refusals only after the
chunk is read, pipelined chunks, the size limit, the DATA/BDAT mix that must fail, and
BINARYMIME content (NUL, bare CR and LF) stored as sent and only by BDAT."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Edge, EdgeFactory


class Wire:
    """A raw SMTP client (smtplib has no BDAT): send bytes, read whole replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[bytes]]:
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            if not line:
                return 0, lines  # closed
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, line: bytes) -> tuple[int, list[bytes]]:
        self.send(line + b"\r\n")
        return self.reply()

    def transaction(self, rcpt: bytes = b"alice@example.org", params: bytes = b"") -> None:
        assert self.command(b"EHLO client.test")[0] == 250
        assert self.command(b"MAIL FROM:<carol@remote.example>" + params)[0] == 250
        assert self.command(b"RCPT TO:<" + rcpt + b">")[0] == 250

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def bdat(chunk: bytes, last: bool = False) -> bytes:
    return b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk


def _session(
    port: int, script: list[bytes], replies: int, params: bytes = b""
) -> list[tuple[int, list[bytes]]]:
    wire = Wire(port)
    try:
        wire.transaction(params=params)
        for data in script:
            wire.send(data)
        return [wire.reply() for _ in range(replies)]
    finally:
        wire.close()


async def test_ehlo_advertises_chunking_and_binarymime(edge: Edge) -> None:
    def ehlo() -> list[bytes]:
        wire = Wire(edge.mx)
        try:
            return wire.command(b"EHLO client.test")[1]
        finally:
            wire.close()

    keywords = [line[4:] for line in await asyncio.to_thread(ehlo)]
    assert b"CHUNKING" in keywords
    assert b"BINARYMIME" in keywords  # RFC 3030 §3, ADR 40


async def test_chunks_are_the_message_byte_for_byte(edge: Edge) -> None:
    """No dot-stuffing in BDAT (RFC 3030 §2): a line "." and a lone CRLF.CRLF are content, and
    chunk borders may fall anywhere, even inside a CRLF."""
    first = b"Subject: chunked\r\n\r\nline one\r\n.\r\n..two dots\r"
    second = b"\nlast line\r\n"
    replies = await asyncio.to_thread(
        _session, edge.mx, [bdat(first) + bdat(second) + bdat(b"", last=True)], 3
    )  # pipelined: three chunks in one write
    assert [r[0] for r in replies] == [250, 250, 250]
    assert replies[0][1] == [b"250 2.0.0 Ok: %d octets received" % len(first)]
    assert b"queued as" in replies[2][1][0]
    [msg] = await edge.messages(1)
    assert msg.inline_content.endswith(first + second)


async def test_bdat_before_mail_is_read_and_refused_and_the_session_goes_on(edge: Edge) -> None:
    """The refused chunk's octets are read, never parsed as commands."""
    smuggled = b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"

    def run() -> list[tuple[int, list[bytes]]]:
        wire = Wire(edge.mx)
        try:
            out = [wire.command(b"EHLO client.test")]
            wire.send(bdat(smuggled, last=True))
            out.append(wire.reply())
            out.append(wire.command(b"NOOP"))
            return out
        finally:
            wire.close()

    ehlo, refused, noop = await asyncio.to_thread(run)
    assert ehlo[0] == 250
    assert refused == (503, [b"503 5.5.1 Error: need MAIL command"])
    assert noop == (250, [b"250 2.0.0 Ok"])
    assert await edge.records(0) == []


@pytest.mark.parametrize("arg", [b"", b"abc", b"-1", b"10 NOTLAST", b"10 LAST x", b"1" * 19])
async def test_bad_bdat_syntax_answers_501_and_hangs_up(edge: Edge, arg: bytes) -> None:
    """Without a valid size the chunk cannot be found, so the connection ends."""

    def run() -> tuple[tuple[int, list[bytes]], tuple[int, list[bytes]]]:
        wire = Wire(edge.mx)
        try:
            wire.transaction()
            first = wire.command(b"BDAT " + arg if arg else b"BDAT")
            return first, wire.reply()
        finally:
            wire.close()

    reply, after = await asyncio.to_thread(run)
    assert reply == (501, [b"501 5.5.4 Syntax: BDAT chunk-size [LAST]"])
    assert after == (0, [])  # closed
    assert await edge.records(0) == []


async def test_oversize_is_refused_at_the_chunk_that_crosses_the_limit(edge: Edge) -> None:
    limit = edge.settings.smtp_max_message_bytes
    big = b"x" * 1000 + b"\r\n"
    chunks = [big * (limit // len(big) // 2)] * 3  # the third crosses the limit
    script = [bdat(chunks[0]) + bdat(chunks[1]) + bdat(chunks[2]) + bdat(b"end\r\n", last=True)]
    replies = await asyncio.to_thread(_session, edge.mx, script, 4)
    assert [r[0] for r in replies] == [250, 250, 552, 503]
    assert replies[2][1] == [b"552 5.3.4 Message size exceeds fixed maximum message size"]
    assert await edge.records(0) == []


async def test_data_after_bdat_is_a_bad_sequence(edge: Edge) -> None:
    replies = await asyncio.to_thread(
        _session, edge.mx, [bdat(b"Subject: x\r\n\r\n"), b"DATA\r\n"], 2
    )
    assert replies[1] == (503, [b"503 5.5.1 Error: DATA after BDAT"])
    assert await edge.records(0) == []


async def test_rset_between_chunks_clears_the_message(edge: Edge) -> None:
    def run() -> list[tuple[int, list[bytes]]]:
        wire = Wire(edge.mx)
        try:
            wire.transaction()
            wire.send(bdat(b"Subject: dropped\r\n\r\n"))
            out = [wire.reply()]
            out.append(wire.command(b"RSET"))
            assert wire.command(b"MAIL FROM:<carol@remote.example>")[0] == 250
            assert wire.command(b"RCPT TO:<alice@example.org>")[0] == 250
            wire.send(bdat(b"Subject: kept\r\n\r\nbody\r\n", last=True))
            out.append(wire.reply())
            return out
        finally:
            wire.close()

    first, rset, last = await asyncio.to_thread(run)
    assert (first[0], rset[0], last[0]) == (250, 250, 250)
    [msg] = await edge.messages(1)
    assert b"Subject: kept" in msg.inline_content
    assert b"dropped" not in msg.inline_content


@pytest.mark.parametrize(
    ("mode", "expected"), [("normalize", 250), ("reject", 550)], ids=["normalize", "reject"]
)
async def test_bare_lf_in_chunks_follows_the_bare_newline_setting(
    make_edge: EdgeFactory, mode: str, expected: int
) -> None:
    edge = await make_edge(smtp_bare_newline=mode)
    replies = await asyncio.to_thread(
        _session, edge.mx, [bdat(b"Subject: x\n\nline one\nline two\r\n", last=True)], 1
    )
    assert replies[0][0] == expected
    if mode == "normalize":
        [msg] = await edge.messages(1)
        assert msg.inline_content.endswith(b"Subject: x\r\n\r\nline one\r\nline two\r\n")
    else:
        assert replies[0][1] == [b"550 5.6.0 Bare LF/CR not allowed"]
        assert await edge.records(0) == []


async def test_connection_lost_mid_chunk_queues_nothing(edge: Edge) -> None:
    def run() -> None:
        wire = Wire(edge.mx)
        wire.transaction()
        wire.send(b"BDAT 1000 LAST\r\n" + b"y" * 400)
        wire.close()

    await asyncio.to_thread(run)
    assert await edge.records(0) == []

    def still_serving() -> int:
        wire = Wire(edge.mx)
        try:
            return wire.command(b"NOOP")[0]
        finally:
            wire.close()

    assert await asyncio.to_thread(still_serving) == 250


# A binary part as RFC 3030 §3 allows it: NUL, bare CR, bare LF, a lone "." line, CRLF.CRLF and
# a line far past 998 octets, none of it encoded.
BINARY_PART = b"\x00\x01\r\x02\n.\r\n\r\n.\r\n\xff\xfe" + b"z" * 2000 + b"\n\x00end"
BINARY_MESSAGE = (
    b"From: <carol@remote.example>\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n" + BINARY_PART + b"\r\n--b1--\r\n"
)


@pytest.mark.parametrize("mode", ["normalize", "reject"])
async def test_binarymime_content_is_stored_byte_for_byte(
    make_edge: EdgeFactory, mode: str
) -> None:
    """BINARYMIME by BDAT is exempt from the bare-newline rules in both modes: no end marker
    to hide anything behind, and the octets are the content."""
    edge = await make_edge(smtp_bare_newline=mode)
    half = len(BINARY_MESSAGE) // 2
    script = [bdat(BINARY_MESSAGE[:half]) + bdat(BINARY_MESSAGE[half:], last=True)]
    replies = await asyncio.to_thread(_session, edge.mx, script, 2, b" BODY=BINARYMIME")
    assert [r[0] for r in replies] == [250, 250], replies
    [msg] = await edge.messages(1)
    assert msg.inline_content.endswith(BINARY_MESSAGE)
    assert msg.body_type == "BINARYMIME"  # carried to delivery on the bus record


async def test_data_after_body_binarymime_is_a_bad_sequence(edge: Edge) -> None:
    """RFC 3030 §3: DATA after MAIL ... BODY=BINARYMIME is answered 503; the transaction is
    gone, so a later BDAT meets "need MAIL command" and nothing is queued."""

    def run() -> list[tuple[int, list[bytes]]]:
        wire = Wire(edge.mx)
        try:
            wire.transaction(params=b" BODY=BINARYMIME")
            out = [wire.command(b"DATA")]
            wire.send(bdat(b"Subject: x\r\n\r\nbody\r\n", last=True))
            out.append(wire.reply())
            out.append(wire.command(b"RSET"))
            return out
        finally:
            wire.close()

    data, late_bdat, rset = await asyncio.to_thread(run)
    assert data == (503, [b"503 5.5.1 Error: BODY=BINARYMIME requires BDAT, not DATA"])
    assert late_bdat[0] == 503
    assert rset[0] == 250
    assert await edge.records(0) == []


async def test_8bitmime_by_bdat_keeps_the_bare_newline_rules(make_edge: EdgeFactory) -> None:
    """Only BINARYMIME is exempt: a NUL-free 8BITMIME body with a bare CR is still refused."""
    edge = await make_edge(smtp_bare_newline="normalize")
    replies = await asyncio.to_thread(
        _session, edge.mx, [bdat(b"Subject: x\r\n\r\na\rb\r\n", last=True)], 1,
        b" BODY=8BITMIME",
    )  # fmt: skip
    assert replies[0] == (550, [b"550 5.6.0 Bare LF/CR not allowed"])
    assert await edge.records(0) == []
