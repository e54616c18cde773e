"""DATA (RFC 5321 §4.1.1.4) on an aiosmtplib connection, with the message prepared by bytes
operations instead of aiosmtplib's two regular-expression passes.

``SMTPProtocol.execute_data_command`` rewrites line endings with one regular expression and
doubles leading dots with another: ~22% of delivery's CPU when relaying 100 KiB messages. The
store's content nearly always has CRLF line endings already (an SMTP client sends CRLF), so
three ``count`` calls show when nothing needs rewriting, and ``replace`` does the
dot-stuffing. The wire bytes are exactly aiosmtplib's (``payload``; a unit test compares
them). The command lock and "reply expected" flag are the private ones BDAT uses too
(:mod:`postmesh.delivery.bdat` checks them at import)."""

from __future__ import annotations

from typing import Any

import aiosmtplib
from aiosmtplib.protocol import LINE_ENDINGS_REGEX

from postmesh.delivery import bdat  # noqa: F401  (its import-time compatibility check)

START_INPUT = 354
COMPLETED = 250


def payload(content: bytes) -> bytes:
    """What follows DATA's 354: every line ending CRLF (RFC 5321 §2.3.8), a final CRLF, a dot
    doubled at the start of each line (§4.5.2), and the end-of-data line."""
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        content = LINE_ENDINGS_REGEX.sub(b"\r\n", content)  # a lone CR or LF somewhere
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    content = content.replace(b"\r\n.", b"\r\n..")
    if content.startswith(b"."):
        content = b"." + content
    return content + b".\r\n"


async def send_data(smtp: aiosmtplib.SMTP, content: bytes) -> aiosmtplib.SMTPResponse:
    """``SMTP.data(content)``: raises SMTPDataError for a reply other than 354 / 250, and
    SMTPServerDisconnected / SMTPTimeoutError (closing the connection) as it does."""
    protocol: Any = smtp.protocol
    if protocol is None or protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    message = payload(content)
    try:
        async with protocol._command_lock:
            protocol._response_pending = True  # before writing, as execute_command does
            protocol.write(b"DATA\r\n")
            start: aiosmtplib.SMTPResponse = await protocol.read_response(timeout=smtp.timeout)
            if start.code != START_INPUT:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(message)
            done: aiosmtplib.SMTPResponse = await protocol.read_response(timeout=smtp.timeout)
            if done.code != COMPLETED:
                raise aiosmtplib.SMTPDataError(done.code, done.message)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()
        raise
    return done
