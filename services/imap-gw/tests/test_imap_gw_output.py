"""A command's last output is held and sent with its tagged reply: one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from postmesh.imap_gw.connection import Connection


class Writer:
    """The StreamWriter surface Connection writes through, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return None


def connection(writer: Writer) -> Connection:
    return Connection(
        asyncio.StreamReader(),
        writer,  # type: ignore[arg-type]
        max_line=1000,
        max_literal=1000,
        max_command=1000,
        timeout=5,
    )


async def test_held_output_goes_out_with_the_next_write() -> None:
    w = Writer()
    conn = connection(w)
    await conn.write(b"* 1 EXISTS\r\n")
    conn.hold(b"* 1 FETCH (FLAGS (\\Seen))\r\n")
    conn.hold(b"* 2 FETCH (FLAGS ())\r\n")
    assert w.writes == [b"* 1 EXISTS\r\n"]  # nothing sent yet
    await conn.write(b"a1 OK STORE completed\r\n")
    assert w.writes[1:] == [
        b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS ())\r\na1 OK STORE completed\r\n"
    ]
    await conn.write(b"a2 OK NOOP completed\r\n")
    assert w.writes[2:] == [b"a2 OK NOOP completed\r\n"]  # held data went out once


async def test_a_last_word_takes_held_output_along() -> None:
    w = Writer()
    conn = connection(w)
    conn.hold(b"* SEARCH 1\r\n")
    conn.write_nowait(b"* BYE Server shutting down\r\n")
    assert w.writes == [b"* SEARCH 1\r\n* BYE Server shutting down\r\n"]
