"""Cutting what FETCH body sections name out of a stored message (RFC 9051 §6.4.5, RFC 3516).

The store parsed the message at delivery into a :class:`~.backend.BodyPart` tree with byte
offsets, so a section is a slice of the raw message found by walking that tree: no MIME parsing
here. Only the top-level header sections can be served from the metadata alone
(:func:`needs_content` says which sections need the message downloaded).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from postmesh.imap_gw.backend import BodyPart
from postmesh.imap_gw.parser.fetch import Section

_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_IDENTITY = frozenset({"7BIT", "8BIT", "BINARY"})


class UnknownCte(Exception):
    """BINARY of a part whose Content-Transfer-Encoding this server cannot decode
    (RFC 3516 §4.3: ``NO [UNKNOWN-CTE]``)."""


def split(message: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line that ends it, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = message.find(sep)
        if i >= 0:
            # A message may start with an empty header (the separator at offset 0).
            return message[: i + len(sep)], message[i + len(sep) :]
    if message.startswith((b"\r\n", b"\n")):
        n = 2 if message.startswith(b"\r\n") else 1
        return message[:n], message[n:]
    return message, b""


def header_fields(header: bytes, names: tuple[str, ...], *, exclude: bool) -> bytes:
    """The header lines whose field name is (or, with ``exclude``, is not) one of ``names``,
    folded lines kept whole, followed by the blank line."""
    wanted = {n.lower().encode("utf-8", "replace") for n in names}
    body = header.rstrip(b"\r\n") + b"\r\n" if header.strip() else b""
    starts = [m.start() for m in _FIELD_START.finditer(body)]
    out = bytearray()
    for i, start in enumerate(starts):
        field = body[start : starts[i + 1] if i + 1 < len(starts) else len(body)]
        name = field.split(b":", 1)[0].strip().lower()
        if (name in wanted) != exclude:
            out += field
    return bytes(out) + b"\r\n"


def _in_message(body: BodyPart, n: int) -> BodyPart | None:
    """Part ``n`` of a message whose body is ``body``: the n-th part of a multipart body, or
    the body itself as part 1 of a non-multipart message (RFC 9051 §6.4.5)."""
    if body.is_multipart:
        return body.parts[n - 1] if n <= len(body.parts) else None
    return body if n == 1 else None


def locate(top: BodyPart, part: tuple[int, ...]) -> BodyPart | None:
    """The body part that the part numbers ``part`` (non-empty) name, or None. Below a
    message/rfc822 part, numbers count the parts of the encapsulated message; below any other
    single part, part 1 is that part itself, as of a non-multipart message (RFC 9051 §6.4.5;
    UW-IMAP and Dovecot answer ``BODY[2.1]`` of a leaf part 2 with part 2)."""
    node = _in_message(top, part[0])
    for n in part[1:]:
        if node is None:
            return None
        if node.is_message and node.message_body is not None:
            node = _in_message(node.message_body, n)
        elif node.is_multipart:
            node = node.parts[n - 1] if n <= len(node.parts) else None
        elif n != 1:
            return None
    return node


@dataclass(frozen=True, slots=True)
class Span:
    """raw[start:end]; ``header``: a header block, which HEADER.FIELDS(.NOT) filters."""

    start: int
    end: int
    header: bool = False


def section_span(top: BodyPart, section: Section | None, size: int) -> Span | None:
    """Where ``BODY[section]`` is in a message of ``size`` octets; None: no such part (NIL)."""
    if section is None or (not section.part and section.text is None):
        return Span(0, size)
    if not section.part:
        if section.text in _HEADER_TEXTS:
            return Span(0, top.body_offset, header=True)
        return Span(top.body_offset, size)  # TEXT
    node = locate(top, section.part)
    if node is None:
        return None
    end = node.body_offset + node.size
    if section.text is None:
        return Span(node.body_offset, end)
    if section.text == "MIME":
        return Span(node.header_offset, node.body_offset, header=True)
    # HEADER / HEADER.FIELDS / TEXT after part numbers name the parts of an encapsulated
    # message, so the part must be message/rfc822 or message/global (RFC 9051 §6.4.5).
    inner = node.message_body
    if inner is None:
        return None
    if section.text in _HEADER_TEXTS:
        return Span(inner.header_offset, inner.body_offset, header=True)
    return Span(inner.body_offset, inner.body_offset + inner.size)


def needs_content(section: Section | None) -> bool:
    """False for the top-level header sections: the store's metadata has the header block."""
    return not (section is not None and not section.part and section.text in _HEADER_TEXTS)


def section_bytes(
    raw: bytes | None, header: bytes, top: BodyPart, section: Section | None, size: int
) -> bytes | None:
    """The octets of ``BODY[section]``, None for a part that does not exist. ``raw`` (the whole
    message) may be None when :func:`needs_content` is False; ``header`` is the top-level
    header block from the metadata."""
    if not needs_content(section):
        return header_section(header, section)
    span = section_span(top, section, size)
    if span is None:
        return None
    assert raw is not None
    return header_section(raw[span.start : span.end], section)


def header_section(data: bytes, section: Section | None) -> bytes:
    """``data`` (a header block, or a section's octets) with HEADER.FIELDS[.NOT] applied. For
    a section :func:`needs_content` is False for, ``data`` is the top-level header and this is
    the whole answer: no body tree needed."""
    if section is not None and section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return header_fields(data, section.fields, exclude=section.text == "HEADER.FIELDS.NOT")
    return data


def binary_part(top: BodyPart, part: tuple[int, ...]) -> BodyPart | None:
    """The part BINARY[part] decodes; ``top`` itself for the empty section."""
    return locate(top, part) if part else top


def decode(data: bytes, encoding: str) -> bytes:
    """The content-transfer-decoded octets (RFC 2045 §6). Raises UnknownCte."""
    enc = encoding.upper()
    if enc in _IDENTITY:
        return data
    if enc == "BASE64":
        # Lenient like mail clients: characters outside the alphabet are skipped (RFC 2045
        # §6.8), missing padding is supplied.
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[: len(clean) - len(clean) % 4 if len(clean) % 4 == 1 else len(clean)]
        try:
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
        except binascii.Error:
            return b""
    if enc == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    raise UnknownCte(encoding)


def binary_bytes(raw: bytes, top: BodyPart, part: tuple[int, ...]) -> bytes | None:
    """The decoded octets of ``BINARY[part]``; None for a part that does not exist. The empty
    section is the whole message as stored (it has no single transfer encoding)."""
    if not part:
        return raw
    node = locate(top, part)
    if node is None:
        return None
    body = raw[node.body_offset : node.body_offset + node.size]
    if node.is_multipart or node.is_message:
        return body  # RFC 2045 §6.4: only 7bit, 8bit or binary are allowed there anyway
    return decode(body, node.encoding)


def binary_size_known(top: BodyPart, part: tuple[int, ...]) -> int | None:
    """BINARY.SIZE from the metadata alone when the part needs no decoding; None when the
    content has to be decoded to know it (or the part does not exist)."""
    if not part:
        return None
    node = locate(top, part)
    if node is None:
        return None
    if node.is_multipart or node.is_message or node.encoding.upper() in _IDENTITY:
        return node.size
    return None


def partial(data: bytes, window: tuple[int, int] | None) -> bytes:
    """``<origin.count>``: an origin beyond the end gives the empty string (RFC 9051 §6.4.5)."""
    if window is None:
        return data
    origin, count = window
    return data[origin : origin + count]
