"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3) for IMAP4rev1 clients.

IMAP4rev2 names are UTF-8 (RFC 9051 §5.1); a client that has not ENABLEd IMAP4rev2 sees and sends
names in this encoding instead.
"""

from __future__ import annotations

import base64


class MUtf7Error(ValueError):
    pass


def _b64(data: str) -> bytes:
    raw = data.encode("utf-16-be")
    return base64.b64encode(raw).rstrip(b"=").replace(b"/", b",")


def encode(name: str) -> bytes:
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.extend(b"&" + _b64("".join(pending)) + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def decode(data: bytes) -> str:
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c > 0x7E or c < 0x20:
            raise MUtf7Error("mailbox name is not 7-bit modified UTF-7")
        if c != 0x26:
            out.append(chr(c))
            i += 1
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise MUtf7Error("unterminated &...- sequence in mailbox name")
        chunk = data[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b = chunk.replace(b",", b"/")
            try:
                raw = base64.b64decode(b + b"=" * (-len(b) % 4), validate=True)
                out.append(raw.decode("utf-16-be"))
            except ValueError as e:
                raise MUtf7Error("invalid modified UTF-7 in mailbox name") from e
        i = end + 1
    return "".join(out)
