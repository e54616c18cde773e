"""Minimal blocking IMAP and POP3 clients on raw sockets, shared by both servers of a side-by-side
bench: one command at a time, literals and multi-line replies read exactly, nothing parsed beyond
what the bench checks, so the client costs little and the same on both sides."""

from __future__ import annotations

import re
import socket

_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")


class ProtocolError(RuntimeError):
    """The server refused a command or closed the connection."""


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Imap:
    """Responses are taken from a buffer filled by large reads: the runs of lines between
    literals are split in one call and the tagged reply found by one search, so a 10,000-line
    FETCH costs the client a few bulk operations rather than a Python step per line (the
    per-line client once spent more CPU on UID FETCH 1:* than the server did)."""

    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self._sock = _connect(port, timeout)
        self._buf = b""
        self._pos = 0
        self._tag = 0
        self.status = b""  # the last tagged reply (response codes such as APPENDUID)
        greeting = self._response()
        if not greeting.startswith(b"* OK"):
            raise ProtocolError(f"greeting: {greeting!r}")

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 18)
        if not chunk:
            raise ProtocolError("connection closed")
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0

    def _response(self) -> bytes:
        """One response at the read position, with its literals (RFC 9051 section 4.3)."""
        at = self._pos
        while True:
            eol = self._buf.find(b"\r\n", at)
            if eol < 0:
                at -= self._pos
                self._fill()
                continue
            m = _LITERAL_END.search(self._buf, at, eol + 2)
            if m is None:
                out, self._pos = self._buf[self._pos : eol + 2], eol + 2
                return out
            end = eol + 2 + int(m.group(1))
            while len(self._buf) < end:
                offset = self._pos
                self._fill()
                end -= offset
            at = end

    def _until_tagged(self, tag: bytes) -> list[bytes]:
        """The untagged responses (without their last CRLF) before the reply tagged ``tag``,
        which goes to ``status``."""
        untagged: list[bytes] = []
        while True:
            buf, pos = self._buf, self._pos
            literal = _LITERAL.search(buf, pos)
            limit = literal.start() if literal else len(buf)
            if buf.startswith(tag, pos):
                tagged = pos
            else:
                hit = buf.find(b"\r\n" + tag, pos, limit)
                tagged = -1 if hit < 0 else hit + 2
            if tagged >= 0:
                if tagged > pos:
                    untagged += buf[pos : tagged - 2].split(b"\r\n")
                self._pos = tagged
                if buf.find(b"\r\n", tagged) < 0:
                    self._fill()  # the tagged line is not complete yet
                    continue
                self.status = self._response()
                return untagged
            if literal is not None:
                # Whole lines before the response that holds the literal, then that response.
                line = buf.rfind(b"\r\n", pos, literal.start())
                if line >= 0:
                    untagged += buf[pos:line].split(b"\r\n")
                    self._pos = pos = line + 2
                end = literal.end() + int(literal.group(1))
                while True:
                    eol = buf.find(b"\r\n", end) if len(buf) >= end else -1
                    if eol < 0:
                        break  # more to read: taken up again from the response's start
                    more = buf[eol - 1] == 0x7D and _LITERAL_END.search(buf, end, eol + 2)
                    if not more:
                        untagged.append(buf[pos:eol])
                        self._pos = eol + 2
                        break
                    end = more.end() + int(more.group(1))
                if eol < 0:
                    self._fill()
                continue
            line = buf.rfind(b"\r\n", pos)
            if line >= pos:
                untagged += buf[pos:line].split(b"\r\n")
                self._pos = line + 2
            self._fill()

    def command(self, line: str, literal: bytes | None = None) -> list[bytes]:
        """Send one command (ending in one synchronizing literal if given); return its untagged
        responses (without their final CRLF), raising ProtocolError unless the tagged reply is
        OK."""
        self._tag += 1
        tag = b"b%d " % self._tag
        if literal is None:
            self._sock.sendall(tag + line.encode() + b"\r\n")
        else:
            self._sock.sendall(tag + line.encode() + b" {%d}\r\n" % len(literal))
            cont = self._response()
            if not cont.startswith(b"+"):
                raise ProtocolError(f"{line}: {cont!r}")
            self._sock.sendall(literal + b"\r\n")
        untagged = self._until_tagged(tag)
        if not self.status.startswith(tag + b"OK"):
            raise ProtocolError(f"{line}: {self.status!r}")
        return untagged

    def login(self, user: str, password: str) -> None:
        self.command(f'LOGIN "{user}" "{password}"')

    def idle(self) -> bytes:
        """Send IDLE (RFC 2177) and wait for its continuation; ``done()`` ends it. Returns the
        command's tag."""
        self._tag += 1
        tag = b"b%d " % self._tag
        self._sock.sendall(tag + b"IDLE\r\n")
        while not (cont := self._response()).startswith(b"+"):
            if not cont.startswith(b"* "):
                raise ProtocolError(f"IDLE: {cont!r}")
        return tag

    def done(self, tag: bytes) -> None:
        self._sock.sendall(b"DONE\r\n")
        self._until_tagged(tag)
        if not self.status.startswith(tag + b"OK"):
            raise ProtocolError(f"IDLE: {self.status!r}")

    def logout(self) -> None:
        try:
            self.command("LOGOUT")
        finally:
            self.close()

    def close(self) -> None:
        self._sock.close()


class Pop3:
    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self._sock = _connect(port, timeout)
        self._buf = b""
        greeting = self._read_until(b"\r\n")
        if not greeting.startswith(b"+OK"):
            raise ProtocolError(f"greeting: {greeting!r}")

    def _read_until(self, end: bytes) -> bytes:
        while True:
            at = self._buf.find(end)
            if at >= 0:
                out, self._buf = self._buf[: at + len(end)], self._buf[at + len(end) :]
                return out
            self._fill()

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ProtocolError("connection closed")
        self._buf += chunk

    def command(self, line: str, multiline: bool = False) -> bytes:
        """The reply to one command; a multi-line one (RFC 1939 section 3) up to and with its
        terminating ".", which dot-stuffing makes unambiguous."""
        self._sock.sendall(line.encode() + b"\r\n")
        status = self._read_until(b"\r\n")
        if not status.startswith(b"+OK"):
            raise ProtocolError(f"{line.split()[0]}: {status!r}")
        if not multiline:
            return status
        while len(self._buf) < 3:
            self._fill()
        if self._buf.startswith(b".\r\n"):  # an empty listing: the terminator follows at once
            self._buf = self._buf[3:]
            return status
        return status + self._read_until(b"\r\n.\r\n")

    def login(self, user: str, password: str) -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {password}")

    def quit(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self._sock.close()
