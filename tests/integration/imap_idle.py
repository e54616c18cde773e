"""A raw IMAP client that can IDLE (imaplib has none before Python 3.14), for the replica
tests and the IDLE bench."""

from __future__ import annotations

import re
import socket
import time


class IdleClient:
    """A raw IMAP session (imaplib has no IDLE before Python 3.14). Loopback, so plaintext
    LOGIN is allowed (ADR 4)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.tag = 0
        assert self.file.readline().startswith(b"* OK")

    def command(self, text: str) -> list[bytes]:
        self.tag += 1
        tag = f"c{self.tag}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            assert line, f"connection closed during {text!r}"
            lines.append(line.rstrip(b"\r\n"))
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), lines
                return lines

    def idle(self) -> None:
        self.tag += 1
        self.sock.sendall(f"c{self.tag} IDLE\r\n".encode())
        assert self.file.readline().startswith(b"+ ")

    def wait_for(self, pattern: bytes, timeout: float = 30.0) -> bytes:
        """The first untagged line matching ``pattern`` (others, such as the EXISTS of a
        message being flagged, pass by)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                line = self.file.readline()
            except TimeoutError:
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s") from None
            assert line, "connection closed while waiting"
            if re.search(pattern, line):
                return line

    def done(self) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(b"DONE\r\n")
        tag = f"c{self.tag} ".encode()
        while not (line := self.file.readline()).startswith(tag):
            assert line, "connection closed after DONE"
        assert line.startswith(tag + b"OK"), line

    def close(self) -> None:
        self.command("LOGOUT")
        self.file.close()
        self.sock.close()
