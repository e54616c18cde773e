"""Minimal blocking IMAP and POP3 clients on raw sockets, shared by both servers of a side-by-side
bench: one command at a time, literals and multi-line replies read exactly, nothing parsed beyond
what the bench checks, so the client costs little and the same on both sides."""

from __future__ import annotations

import re
import socket

_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r\n\Z")


class ProtocolError(RuntimeError):
    """The server refused a command or closed the connection."""


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Imap:
    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self._sock = _connect(port, timeout)
        self._rfile = self._sock.makefile("rb", buffering=1 << 16)
        self._tag = 0
        self.status = b""  # the last tagged reply (response codes such as APPENDUID)
        greeting = self._response()
        if not greeting.startswith(b"* OK"):
            raise ProtocolError(f"greeting: {greeting!r}")

    def _response(self) -> bytes:
        """One response, with its literals (RFC 9051 section 4.3) read in full."""
        parts: list[bytes] = []
        while True:
            line = self._rfile.readline()
            if not line:
                raise ProtocolError("connection closed")
            parts.append(line)
            m = _LITERAL_END.search(line)
            if m is None:
                return b"".join(parts)
            parts.append(self._rfile.read(int(m.group(1))))

    def command(self, line: str, literal: bytes | None = None) -> list[bytes]:
        """Send one command (ending in one synchronizing literal if given); return its untagged
        responses, raising ProtocolError unless the tagged reply is OK."""
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
        untagged: list[bytes] = []
        while True:
            resp = self._response()
            if resp.startswith(tag):
                self.status = resp
                if not resp.startswith(tag + b"OK"):
                    raise ProtocolError(f"{line}: {resp!r}")
                return untagged
            untagged.append(resp)

    def login(self, user: str, password: str) -> None:
        self.command(f'LOGIN "{user}" "{password}"')

    def logout(self) -> None:
        try:
            self.command("LOGOUT")
        finally:
            self.close()

    def close(self) -> None:
        self._rfile.close()
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
