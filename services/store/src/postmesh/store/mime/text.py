"""What IMAP SEARCH looks at (RFC 9051 §6.4.4): decoded header values, decoded body text and
the date of the Date header."""

from __future__ import annotations

import binascii
import datetime
import email.utils
import html
import itertools
import re

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime.headers import (
    MAX_FIELDS,
    decode_base64,
    decode_bytes,
    decode_words,
    iter_fields,
    to_text,
    unfold,
)

# Bounds on what a message contributes to its search document.
MAX_TEXT_CHARS = 1024 * 1024
MAX_HEADER_INDEX_CHARS = 256 * 1024
MAX_HEADER_VALUE_CHARS = 16 * 1024

_EPOCH = datetime.date(1970, 1, 1)
_TAGS = re.compile(r"<(?:script|style)\b.*?</(?:script|style)\s*>|<!--.*?-->|<[^>]*>", re.I | re.S)
_SPACES = re.compile(r"[ \t\xa0]{2,}|[\t\xa0]")
# Blanks around line breaks (see collapse_blank_lines).
_LINE_BLANKS = " \t\r\f\v"


def header_index(source: store_pb2.MessageMeta | bytes) -> dict[str, list[str]]:
    """Lower-case field name → its values, unfolded and RFC 2047-decoded, in order; from a
    MessageMeta (its header) or a raw header block. Bounded in total size."""
    block = source.header if isinstance(source, store_pb2.MessageMeta) else source
    index: dict[str, list[str]] = {}
    budget = MAX_HEADER_INDEX_CHARS
    for name, value in itertools.islice(iter_fields(block), MAX_FIELDS):
        text = decode_words(to_text(unfold(value)[: MAX_HEADER_VALUE_CHARS * 4]))
        text = text[:MAX_HEADER_VALUE_CHARS]
        budget -= len(name) + len(text) + 16  # a field costs something even when empty
        if budget < 0:
            break
        index.setdefault(name, []).append(text)
    return index


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    """The body octets without their Content-Transfer-Encoding (RFC 2045 §6), leniently."""
    if encoding == "BASE64":
        return decode_base64(data)
    if encoding == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    return data


def _part_text(raw: bytes, part: store_pb2.BodyPart, budget: int) -> str:
    # Decoding more than the budget could use is wasted: base64 shrinks by 3/4 and a decoded
    # character is at least one octet.
    start = part.body_offset
    data = raw[start : min(start + part.size, start + budget * 4 + 4)]
    charset = next((p.value for p in part.params if p.name == "charset"), "us-ascii")
    text = decode_bytes(_decode_transfer(data, part.encoding), charset)
    if part.subtype == "html":
        # Markup becomes a space (so block elements do not glue words), then runs collapse.
        text = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", text)))
    return text


def collapse_blank_lines(text: str) -> str:
    """Each run of blanks that holds a line break, as one "\\n": what
    ``re.sub(r"[ \\t\\r\\f\\v]*\\n[ \\t\\r\\n\\f\\v]*", "\\n", text)`` gives (a test checks
    both agree), by splitting at the line breaks: ~6 times quicker on mail text, where that
    expression tries a match at every character (~0.5 ms of each 32 KB message's indexing)."""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    first, last = lines[0].rstrip(_LINE_BLANKS), lines[-1].lstrip(_LINE_BLANKS)
    inner = [kept for kept in (line.strip(_LINE_BLANKS) for line in lines[1:-1]) if kept]
    return "\n".join([first, *inner, last])


def search_text(raw: bytes, meta: store_pb2.MessageMeta, limit: int = MAX_TEXT_CHARS) -> str:
    """The decoded text of the message body for BODY/TEXT search: every text/* part decoded
    from its transfer encoding and charset (HTML without its markup), and the headers of
    embedded messages; parts separated by a newline, at most ``limit`` characters. Case is
    kept; the search evaluator folds it."""
    pieces: list[str] = []
    left = limit
    stack = [meta.body]
    while stack and left > 0:
        part = stack.pop()
        if part.parts:
            stack.extend(reversed(part.parts))
            continue
        if part.type == "message" and part.HasField("message_body"):
            inner = part.message_body
            text = decode_words(to_text(unfold(raw[inner.header_offset : inner.body_offset])))
            stack.append(inner)
        elif part.type == "text":
            text = _part_text(raw, part, left)
        else:
            continue
        text = collapse_blank_lines(text.replace("\x00", " ")).strip()
        if text:
            pieces.append(text[:left])
            left -= len(pieces[-1]) + 1
    return "\n".join(pieces)


def sent_date(meta: store_pb2.MessageMeta) -> datetime.date | None:
    """The calendar date of the Date header in its own zone (RFC 9051 §6.4.4 SENT* keys
    disregard time and timezone); None when absent or unparseable."""
    value = meta.envelope.date
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value[:200])
        if parsed is None:
            return None
        year, month, day = parsed[0], parsed[1], parsed[2]
        return datetime.date(year, month, day)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def sent_day(meta: store_pb2.MessageMeta) -> int | None:
    """sent_date as days since 1970-01-01 (the unit of SearchKey's date keys)."""
    d = sent_date(meta)
    return None if d is None else (d - _EPOCH).days
