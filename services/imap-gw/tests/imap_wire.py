"""A raw-socket IMAP client for scripted request/response transcripts in the unit tests.

imaplib hides untagged data and response codes; these tests need the exact lines the server
sends, so they talk over a plain asyncio stream instead.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

USER = "alice@example.org"
PASSWORD = 's3cret pass\\"word'  # store_env's account: a space, a backslash and a quote
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
TIMEOUT = 5.0
_LITERAL_END = re.compile(rb"~?\{(\d+)\}\r\n\Z")


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, env: Env) -> Client:
        """Connected, greeting read."""
        r, w = await asyncio.open_connection("127.0.0.1", env.port)
        c = cls(r, w)
        assert (await c.line()).startswith(b"* OK")
        return c

    @classmethod
    async def login(cls, env: Env) -> Client:
        """Authenticated as USER."""
        c = await cls.connect(env)
        reply = await c.cmd(b"L AUTHENTICATE PLAIN " + PLAIN)
        assert reply[-1].startswith(b"L OK"), reply
        return c

    @classmethod
    async def selected(cls, env: Env, verb: str = "SELECT", mailbox: str = "INBOX") -> Client:
        """Authenticated with ``mailbox`` selected (or examined)."""
        c = await cls.login(env)
        reply = await c.cmd(f"S {verb} {mailbox}".encode())
        assert reply[-1].startswith(b"S OK"), reply
        return c

    async def line(self) -> bytes:
        """One line without its CRLF; fails the test if the server closed the connection."""
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert raw, "server closed the connection"
        return raw.rstrip(b"\r\n")

    async def send(self, data: bytes) -> None:
        self.writer.write(data + b"\r\n")
        await self.writer.drain()

    async def cmd(self, command: bytes) -> list[bytes]:
        """Send one command; its untagged lines and tagged reply, without CRLF."""
        tag = command.split(b" ", 1)[0]
        await self.send(command)
        out = []
        while True:
            line = await self.line()
            out.append(line)
            if line.startswith(tag + b" "):
                return out

    async def response(self) -> bytes:
        """One whole response, literals included as sent (``{n}`` CRLF data), without the
        final CRLF."""
        out = b""
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            assert raw, "server closed the connection"
            m = _LITERAL_END.search(raw)
            if m is None:
                return out + raw.rstrip(b"\r\n")
            data = await asyncio.wait_for(self.reader.readexactly(int(m.group(1))), TIMEOUT)
            out += raw + data

    async def cmd_literals(self, command: bytes) -> list[bytes]:
        """Like :meth:`cmd`, for replies that carry literals: one element per response."""
        tag = command.split(b" ", 1)[0]
        await self.send(command)
        out = []
        while True:
            resp = await self.response()
            out.append(resp)
            if resp.startswith(tag + b" "):
                return out

    async def idle(self) -> None:
        await self.send(b"i IDLE")
        assert await self.line() == b"+ idling"

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF before any further data)."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
