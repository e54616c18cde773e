"""A client that closes its sending side (a half-close, RFC 793 FIN) after pipelining: every
command it sent before is still answered (RFC 2920 §3.2: the server never loses the input
buffer), the message it sent is queued once and acknowledged, and then the session ends."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import EdgeFactory

MESSAGE = b"From: carol@remote.example\r\nSubject: half\r\n\r\nhello\r\n"


def _talk(port: int, steps: list[bytes], *, wait_for: bytes = b"") -> bytes:
    """Send each step (after ``wait_for`` appears, if given, before the last one), then close
    the sending side and read every reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        got = b""
        for i, step in enumerate(steps):
            if wait_for and i == len(steps) - 1:
                while wait_for not in got:
                    chunk = s.recv(4096)
                    assert chunk, got
                    got += chunk
            s.sendall(step)
        s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(4096):
            got += chunk
        return got


def _codes(replies: bytes) -> list[bytes]:
    return [line[:4] for line in replies.split(b"\r\n") if line]


async def test_the_message_and_quit_before_the_fin_are_answered(make_edge: EdgeFactory) -> None:
    edge = await make_edge()
    head = b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    replies = await asyncio.to_thread(
        _talk, edge.mx, [head, MESSAGE + b".\r\nQUIT\r\n"], wait_for=b"354 "
    )
    codes = _codes(replies)
    assert codes[-3:] == [b"354 ", b"250 ", b"221 "], replies
    assert b"queued as" in replies
    [msg] = await edge.messages(1)
    assert msg.inline_content.endswith(MESSAGE)


async def test_a_whole_pipelined_transaction_then_fin(make_edge: EdgeFactory) -> None:
    """An early talker: everything in one write, BDAT included, then FIN without waiting."""
    edge = await make_edge()
    burst = (
        b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
        b"BDAT %d LAST\r\n" % len(MESSAGE) + MESSAGE + b"QUIT\r\n"
    )
    replies = await asyncio.to_thread(_talk, edge.mx, [burst])
    codes = _codes(replies)
    assert codes[0] == b"220 " and codes[-4:] == [b"250 ", b"250 ", b"250 ", b"221 "], replies
    [msg] = await edge.messages(1)
    assert msg.inline_content.endswith(MESSAGE)


async def test_a_fin_without_quit_still_gets_the_250(make_edge: EdgeFactory) -> None:
    edge = await make_edge()
    head = b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    replies = await asyncio.to_thread(_talk, edge.mx, [head, MESSAGE + b".\r\n"], wait_for=b"354 ")
    assert _codes(replies)[-1] == b"250 ", replies
    assert len(await edge.messages(1)) == 1


async def test_a_fin_in_the_middle_of_the_data_stores_nothing(make_edge: EdgeFactory) -> None:
    edge = await make_edge()
    head = b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
    replies = await asyncio.to_thread(_talk, edge.mx, [head, MESSAGE], wait_for=b"354 ")
    assert _codes(replies)[-1] == b"354 ", replies  # nothing after: no end marker came
    burst = b"EHLO client.test\r\nMAIL FROM:<carol@remote.example>\r\nRCPT TO:<alice@example.org>\r\nBDAT 100 LAST\r\nshort"
    replies = await asyncio.to_thread(_talk, edge.mx, [burst])
    assert _codes(replies)[-1] == b"250 ", replies  # the RCPT's; the chunk never completed
    assert await edge.records(0) == []
