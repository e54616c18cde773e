"""Slicing a raw RFC 5322 message into what FETCH body sections name (RFC 9051 §6.4.5)."""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

from postmesh.imap_gw.parser.fetch import Section


class SectionUnsupported(Exception):
    """A section this server cannot serve yet (MIME parts of multipart messages)."""


_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)


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


def _is_multipart(header: bytes) -> bool:
    msg = BytesHeaderParser(policy=compat32).parsebytes(header)
    return msg.get_content_maintype() == "multipart"


def section_bytes(message: bytes, section: Section | None) -> bytes:
    """The octets of ``BODY[section]``."""
    if section is None or (not section.part and section.text is None):
        return message
    header, body = split(message)
    if section.part:
        # Part 1 of a non-multipart message is its body (RFC 9051 §6.4.5); real MIME part
        # addressing needs the body structure, which a later change adds.
        if section.part != (1,) or section.text is not None or _is_multipart(header):
            raise SectionUnsupported("MIME part sections are not supported yet")
        return body
    if section.text == "HEADER":
        return header
    if section.text == "TEXT":
        return body
    return header_fields(header, section.fields, exclude=section.text == "HEADER.FIELDS.NOT")


def partial(data: bytes, window: tuple[int, int] | None) -> bytes:
    if window is None:
        return data
    origin, count = window
    return data[origin : origin + count]
