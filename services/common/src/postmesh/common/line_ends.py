"""Bare LF line ends made CRLF, whole or streamed: what the SMTP edge does to DATA (Postfix
3.9's ``smtpd_forbid_bare_newline = normalize``) and the store to an IMAP APPEND (RFC 5322 §2.1:
a message's lines end in CRLF; Dovecot presents such a message with CRLF too)."""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def normalize_bare_lf(data: bytes | bytearray) -> bytes | bytearray:
    """Every LF not preceded by CR becomes CRLF (a bare CR stays, for the caller to judge)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data  # the common case: nothing to do, no copy
    return _BARE_LF.sub(b"\r\n", data)


class BareLfNormalizer:
    """:func:`normalize_bare_lf` over a stream of chunks: an LF that starts a chunk after a CR
    that ended the previous one is part of a CRLF, not bare."""

    __slots__ = ("_after_cr",)

    def __init__(self) -> None:
        self._after_cr = False

    def feed(self, data: bytes) -> bytes:
        if not data:
            return data
        out = bytes(normalize_bare_lf(data))
        if self._after_cr and data[0] == 0x0A:
            out = out[1:]  # the CR normalising put before it is the previous chunk's
        self._after_cr = data[-1] == 0x0D
        return out
