"""BDAT (RFC 3030 §2) on an aiosmtplib connection, which has no BDAT of its own.

A BDAT chunk is the command line followed by its octets, answered once both are read, so it
cannot go through ``execute_command`` (which waits for the reply before anything else is
written). Each chunk is written as one piece and its reply read before the next (no
pipelining): aiosmtplib's protocol holds one reply at a time and drops what arrives while one
is waiting to be read, so several chunks in flight would lose replies. A chunk of
:data:`CHUNK_SIZE` keeps the round trips few (one per MiB) while each write stays bounded.

aiosmtplib's command lock and "reply expected" flag are private; :func:`check_compatibility`
runs at import, so an upgrade that changes them stops the service at start, and the unit tests
send BDAT to a real server."""

from __future__ import annotations

from typing import Any

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

CHUNK_SIZE = 1024 * 1024

TESTED_VERSIONS = ("5.1.3",)


class AiosmtplibIncompatible(RuntimeError):
    """The installed aiosmtplib no longer has the internals BDAT uses."""


def check_compatibility() -> None:
    probe = SMTPProtocol()
    problems = [
        f"SMTPProtocol.{name} is gone"
        for name in ("_command_lock", "_response_pending", "write", "read_response")
        if not hasattr(probe, name)
    ]
    if problems:
        raise AiosmtplibIncompatible(
            f"aiosmtplib {aiosmtplib.__version__} (tested: {', '.join(TESTED_VERSIONS)}): "
            + "; ".join(problems)
        )


check_compatibility()


def chunks(content: bytes, size: int = CHUNK_SIZE) -> list[tuple[bytes, bool]]:
    """(chunk, last) pairs; an empty message is one empty LAST chunk (RFC 3030 §2 allows it)."""
    if not content:
        return [(b"", True)]
    pieces = [content[i : i + size] for i in range(0, len(content), size)]
    return [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]


async def send_chunk(
    smtp: aiosmtplib.SMTP, chunk: bytes, last: bool, timeout: float | None
) -> aiosmtplib.SMTPResponse:
    """``BDAT <size> [LAST]`` and the chunk, then its reply. Raises SMTPServerDisconnected /
    SMTPReadTimeoutError as the other commands do."""
    protocol: Any = smtp.protocol
    if protocol is None or protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    command = b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"")
    async with protocol._command_lock:
        # Set before writing, as execute_command does: a reply that arrives before we wait
        # for it must be kept, not dropped as unsolicited.
        protocol._response_pending = True
        protocol.write(command + chunk)
        response: aiosmtplib.SMTPResponse = await protocol.read_response(timeout=timeout)
    return response
