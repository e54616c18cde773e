"""BDAT (RFC 3030 §2) on the session's :class:`~postmesh.delivery.wire.Wire`.

A BDAT chunk is the command line followed by its octets, answered once both are read. Each
chunk is written as one piece and its reply read before the next: a refused chunk ends the
transaction (§2: no more chunks after a 4xx/5xx), and a chunk of :data:`CHUNK_SIZE` keeps the
round trips few (one per MiB) while each write stays bounded."""

from __future__ import annotations

from aiosmtplib import SMTPResponse

from postmesh.delivery.wire import Wire

CHUNK_SIZE = 1024 * 1024


def chunks(content: bytes, size: int = CHUNK_SIZE) -> list[tuple[bytes, bool]]:
    """(chunk, last) pairs; an empty message is one empty LAST chunk (RFC 3030 §2 allows it)."""
    if not content:
        return [(b"", True)]
    pieces = [content[i : i + size] for i in range(0, len(content), size)]
    return [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]


async def send_chunk(wire: Wire, chunk: bytes, last: bool) -> SMTPResponse:
    """``BDAT <size> [LAST]`` and the chunk, then its reply. Raises SMTPServerDisconnected /
    SMTPReadTimeoutError as the other commands do."""
    wire.write(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
    return await wire.reply()
