"""Binary MIME (RFC 3030 §3) for a next hop without BINARYMIME: the gateway conversion the RFC
allows, binary leaf parts re-encoded as base64, or a refusal when that cannot be done safely
(ADR 40).

The conversion works on the raw octets, as the store's MIME parser does, so everything it does
not convert (header fields, preambles, the other parts) leaves as it came. It refuses, rather
than changes, content a signature covers: anything under multipart/signed or an encrypted or
signed entity (RFC 1847, RFC 8551), and any message carrying a DKIM or ARC signature from an
earlier hop. Our own DKIM signature is made after the conversion, over what is sent."""

from __future__ import annotations

import base64
import re

# RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF; RFC 2045 §2.8: a line of binary data is not.
MAX_LINE = 998
# Nesting cap (multipart and message/rfc822 levels), as the store's parser has.
MAX_DEPTH = 50
BASE64_LINE = 76  # RFC 2045 §6.8

# Entities whose octets a signature covers (RFC 1847 §2.1, RFC 8551 §3, RFC 3156): never changed.
_SIGNED_TYPES = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
        "application/pkcs7-signature",
        "application/pgp-encrypted",
        "application/pgp-signature",
    }
)
# Header fields whose signature covers the body (RFC 6376 §3.7, RFC 8617 §4.1.2).
_BODY_SIGNATURES = (b"dkim-signature", b"arc-message-signature")
_IDENTITY = frozenset({"7bit", "8bit", "binary", ""})
# A part below labelled binary (RFC 2045 §6.1), even if its octets would pass as 8bit.
_BINARY_LABEL = re.compile(rb"content-transfer-encoding:\s*binary\b", re.IGNORECASE)
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))""", re.IGNORECASE)


class NotConvertible(Exception):
    """The message cannot go as 7bit/8bit MIME without changing signed or unparseable
    content: the caller returns it as undeliverable (5.6.3)."""


def is_binary(content: bytes) -> bool:
    """Octets only BDAT with BODY=BINARYMIME may carry: NUL, a CR or LF that is not part of a
    CRLF, or a line longer than 998 octets (RFC 2045 §2.7-2.8, RFC 5321 §4.5.3.1.6)."""
    if b"\0" in content:
        return True
    crlf = content.count(b"\r\n")
    if content.count(b"\r") != crlf or content.count(b"\n") != crlf:
        return True
    return len(content) > MAX_LINE and any(len(line) > MAX_LINE for line in content.split(b"\r\n"))


def to_seven_or_eight_bit(message: bytes) -> bytes:
    """The message with every binary leaf part as base64 (and the Content-Transfer-Encoding of
    the multiparts and message/rfc822 entities above it made 7bit or 8bit). Raises
    NotConvertible. A message with nothing binary comes back unchanged."""
    converted = _entity(message, 0, top=True)
    if converted == message:
        return message
    header, _ = _split(message)
    if any(name in _BODY_SIGNATURES for name, _ in _fields(header)):
        raise NotConvertible("the message carries a DKIM/ARC signature that covers the body")
    if is_binary(converted):  # a defect in the walk must never reach a DATA peer
        raise NotConvertible("binary octets left after conversion")
    return converted


def _split(entity: bytes) -> tuple[bytes, bytes]:
    """(header section with its line ends, body) of an entity; the blank line goes with
    neither (RFC 5322 §2.1)."""
    if entity.startswith(b"\r\n"):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return entity, b""
    return entity[: end + 2], entity[end + 4 :]


def _fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of each header field."""
    out: list[tuple[bytes, bytes]] = []
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, (value + b" " + line.strip()).strip())
        elif b":" in line:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower(), value.strip()))
    return out


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> str:
    for n, v in fields:
        if n == name:
            return v.decode("ascii", "replace")
    return ""


def _with_cte(header: bytes, cte: str) -> bytes:
    """The header section with its Content-Transfer-Encoding fields replaced by one."""
    kept: list[bytes] = []
    dropping = False
    lines = header.split(b"\r\n")
    if header.endswith(b"\r\n"):
        lines.pop()  # the empty piece after the last CRLF
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() == b"content-transfer-encoding"
        if not dropping:
            kept.append(line)
    kept.append(b"Content-Transfer-Encoding: " + cte.encode())
    return b"".join(line + b"\r\n" for line in kept)


def _domain(content: bytes) -> str:
    return "8bit" if not content.isascii() else "7bit"


def _entity(entity: bytes, depth: int, *, top: bool = False) -> bytes:
    header, body = _split(entity)
    if is_binary(header):
        raise NotConvertible("binary octets in a header section")
    fields = _fields(header)
    ctype = _field(fields, b"content-type")
    mtype = ctype.split(";", 1)[0].strip().lower() or "text/plain"
    cte = _field(fields, b"content-transfer-encoding").lower()
    if cte != "binary" and not is_binary(body) and _BINARY_LABEL.search(body) is None:
        return entity  # nothing to convert below: 7bit/8bit content stays as it is
    if depth > MAX_DEPTH:
        raise NotConvertible("MIME nesting too deep to convert")
    if mtype in _SIGNED_TYPES:
        raise NotConvertible(f"binary content inside {mtype}, which a signature covers")
    if mtype.startswith("multipart/"):
        m = _BOUNDARY.search(ctype)
        if m is None or cte not in _IDENTITY:
            raise NotConvertible(f"{mtype} without a usable boundary")
        boundary = (m.group(1) if m.group(1) is not None else m.group(2)).encode()
        new_body = _multipart(body, boundary, depth)
    elif mtype in ("message/rfc822", "message/global"):
        if cte not in _IDENTITY:
            raise NotConvertible(f"{mtype} with Content-Transfer-Encoding {cte}")
        new_body = _entity(body, depth + 1)
    else:
        if cte not in _IDENTITY:
            # Already base64 or quoted-printable yet with binary octets: broken, not binary.
            raise NotConvertible(f"binary octets in {cte}-encoded content")
        encoded = base64.b64encode(body)
        lines = [encoded[i : i + BASE64_LINE] for i in range(0, len(encoded), BASE64_LINE)]
        new_body = b"\r\n".join(lines) + (b"\r\n" if top else b"")
        return _with_cte(header, "base64") + b"\r\n" + new_body
    # RFC 2045 §6.4: a multipart or message entity labelled binary becomes 7bit or 8bit once
    # nothing in it is; one without the label keeps its header as it is.
    if cte == "binary":
        header = _with_cte(header, _domain(new_body))
    return header + b"\r\n" + new_body


def _multipart(body: bytes, boundary: bytes, depth: int) -> bytes:
    """The body with each part converted; delimiters, preamble and epilogue unchanged
    (RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter)."""
    delimiter = re.compile(rb"(?:\A|\r\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r\n|\Z)")
    found = list(delimiter.finditer(body))
    if not found:
        raise NotConvertible("multipart without its boundary")
    preamble, epilogue = body[: found[0].start()], b""
    out = [preamble]
    for i, m in enumerate(found):
        out.append(body[m.start() : m.end()])
        end = found[i + 1].start() if i + 1 < len(found) else len(body)
        if m.group(1):  # the close delimiter: the rest is the epilogue
            epilogue = body[m.end() :]
            out.append(epilogue)
            break
        start = m.end() + 2 if body[m.end() : m.end() + 2] == b"\r\n" else m.end()
        out.append(body[m.end() : start])
        out.append(_entity(body[start:end], depth + 1))
    if is_binary(preamble) or is_binary(epilogue):
        raise NotConvertible("binary octets in a multipart preamble or epilogue")
    return b"".join(out)
