"""Header blocks on raw bytes: where they end, their fields, unfolding, RFC 2047 encoded-words,
charsets and MIME parameters (RFC 2045, RFC 2231).

Everything here is lenient by design: it runs on every delivered message, whatever its shape,
and must turn any bytes into something usable without raising.
"""

from __future__ import annotations

import binascii
import codecs
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

# RFC 5322 §2.2: field-name = 1*ftext (printable US-ASCII except ":"); the obsolete syntax
# (§4.5) allows white space before the colon. A continuation line starts with WSP (§2.2.3).
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
# A line (after its predecessor's LF) that is neither a field, a continuation nor blank. The
# search jumps from LF to LF in C, so even a header of millions of lines is scanned quickly.
_NOT_HEADER_LINE = re.compile(rb"\n(?![ \t]|[!-9;-~]+[ \t]*:|\r?\n|\r?\Z)")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)
_FOLD = re.compile(rb"\r?\n(?=[ \t])")

# Longest header value we parse for structure (addresses, Content-Type): beyond this no real
# mailer goes, and tokenising more would only cost CPU.
MAX_STRUCTURED_CHARS = 128 * 1024
# Fields read per header block; a block of millions of tiny fields only costs memory.
MAX_FIELDS = 10_000


def find_body_start(raw: bytes, start: int, end: int) -> int:
    """Where the body of the entity in ``raw[start:end]`` starts, i.e. the end of its header
    block, which includes the blank line that ends it (CRLF or a bare LF).

    An entity that starts with a blank line has no fields (RFC 2046 §5.1.1). A line that is
    neither a field nor a continuation ends the header without a separator and is the first
    body line (as Python's email package and most MUAs read it). Without any such line the
    whole entity is header.
    """
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    if raw.startswith(b"\n", start, end):
        return start + 1
    if not _FIELD_START.match(raw, start, end):
        return start  # no header at all: the first line is body
    # The first blank line, the end of the header block (a lone CR before it is kept).
    blank = raw.find(b"\n\r\n", start, end)
    lf_blank = raw.find(b"\n\n", start, end if blank < 0 else blank + 1)
    if lf_blank >= 0:
        blank, blank_end = lf_blank, lf_blank + 2
    elif blank >= 0:
        blank_end = blank + 3
    else:
        blank, blank_end = end, end
    bad = _NOT_HEADER_LINE.search(raw, start, min(blank + 1, end))
    if bad is not None:
        return bad.start() + 1
    return blank_end


def iter_fields(block: bytes) -> Iterator[tuple[str, bytes]]:
    """(lower-case field name, raw value bytes still folded) for each field of a header block."""
    for m in _FIELD.finditer(block):
        yield m.group(1).decode("ascii").lower(), m.group(2)


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding (drop the line break before WSP), surrounding WSP trimmed."""
    if b"\n" in value:
        value = _FOLD.sub(b"", value)
    return value.strip(b" \t\r\n")


def to_text(value: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532), undecodable octets replaced."""
    if value.isascii():
        return value.decode("ascii")
    return value.decode("utf-8", "replace")


@dataclass(slots=True)
class Fields:
    """A header block's fields by lower-case name, values unfolded (in order of appearance)."""

    items: list[tuple[str, str]]
    _first: dict[str, str]

    @classmethod
    def parse(cls, block: bytes) -> Fields:
        items = [
            (name, to_text(unfold(value)))
            for name, value in itertools.islice(iter_fields(block), MAX_FIELDS)
        ]
        first: dict[str, str] = {}
        for name, value in items:
            first.setdefault(name, value)
        return cls(items, first)

    def first(self, name: str) -> str | None:
        """The value of the first field called ``name``, or None."""
        return self._first.get(name)


# --- charsets ---------------------------------------------------------------------------------

# Labels mail software uses that Python does not know, or knows as a narrower set
# (WHATWG Encoding Standard mappings).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "windows-31j": "cp932",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "x-user-defined": "latin-1",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "unknown": "utf-8",
    "default": "utf-8",
    "us-ascii": "utf-8",  # 8-bit text mislabelled as ASCII is most often UTF-8
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
}
_charset_cache: dict[str, str] = {}


def _codec_name(charset: str) -> str:
    key = charset.strip().strip("\"'").lower()[:40]
    name = _charset_cache.get(key)
    if name is None:
        name = _CHARSET_ALIASES.get(key, key)
        try:
            info = codecs.lookup(name)
            # Only text encodings: "base64", "zlib" and friends are bytes-to-bytes codecs.
            name = info.name if getattr(info, "_is_text_encoding", True) else "utf-8"
        except LookupError:
            name = "utf-8"
        if len(_charset_cache) < 256:
            _charset_cache[key] = name
    return name


def decode_bytes(data: bytes, charset: str) -> str:
    """``data`` in ``charset``; unknown charsets are read as UTF-8, bad octets replaced."""
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode(_codec_name(charset), "replace")
    except Exception:  # a codec that rejects errors="replace" (idna) or misbehaves
        return data.decode("utf-8", "replace")


# --- RFC 2047 encoded-words -------------------------------------------------------------------

# Lenient: encoded-words are recognised anywhere (also inside quoted strings and glued to
# other text), as Thunderbird, Gmail and Python's email package do in practice.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_QP_HEADER = re.compile(rb"=([0-9A-Fa-f]{2})")
_CONTROLS = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})


def _decode_q(text: str) -> bytes:
    data = text.encode("ascii", "replace").replace(b"_", b" ")
    return _QP_HEADER.sub(lambda m: bytes([int(m.group(1), 16)]), data)


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")


def decode_base64(data: bytes) -> bytes:
    """Lenient base64 (RFC 2045 §6.8: characters outside the alphabet are ignored); decoding
    stops at the padding that ends the data, and missing padding is tolerated."""
    data = _B64_JUNK.sub(b"", data)
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    data = data.replace(b"=", b"")
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return b""


def _decode_b(text: str) -> bytes:
    return decode_base64(text.encode("ascii", "replace"))


def decode_words(value: str) -> str:
    """``value`` with RFC 2047 encoded-words decoded. White space between two adjacent
    encoded-words is dropped (RFC 2047 §6.2); consecutive words in one charset are joined as
    bytes first, since encoders split multi-byte characters across words."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending_charset = ""
    pending = bytearray()
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(bytes(pending), pending_charset).translate(_CONTROLS))
            pending.clear()

    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos : m.start()]
        if not (pending and gap.strip(" \t\r\n") == ""):
            flush()
            out.append(gap)
        # RFC 2231 §5: charset*language.
        charset = m.group(1).split("*", 1)[0].lower()
        data = _decode_b(m.group(3)) if m.group(2) in "bB" else _decode_q(m.group(3))
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending += data
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


# --- MIME structured fields (RFC 2045 §5.1, RFC 2183, RFC 2231) ------------------------------


def comment_end(s: str, i: int) -> int:
    """Index after the (possibly nested) comment (RFC 5322 §3.2.2) that starts at
    ``s[i] == "("``; the string's length when it is not closed."""
    depth = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _strip_comments(s: str) -> str:
    """``s`` without RFC 5322 comments outside quoted strings."""
    if "(" not in s:
        return s
    out: list[str] = []
    i = 0
    n = len(s)
    in_quote = False
    while i < n:
        c = s[i]
        if in_quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(s[i + 1])
                i += 2
                continue
            if c == '"':
                in_quote = False
            i += 1
        elif c == '"':
            in_quote = True
            out.append(c)
            i += 1
        elif c == "(":
            i = comment_end(s, i)
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


_PARAM_PIECE = re.compile(r'(?:[^;"]+|"(?:[^"\\]|\\.)*(?:"|\Z))*', re.DOTALL)


def _split_params(s: str) -> list[str]:
    """``s`` split at semicolons outside quoted strings."""
    if '"' not in s:
        return s.split(";")
    parts: list[str] = []
    pos = 0
    n = len(s)
    while True:
        m = _PARAM_PIECE.match(s, pos)
        end = m.end() if m else pos
        parts.append(s[pos:end])
        if end >= n:
            return parts
        pos = end + 1  # past the ";"


def _unquote(v: str) -> str:
    v = v.strip(" \t\r\n")
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    if v.startswith('"'):  # unterminated quoted string
        return re.sub(r"\\(.)", r"\1", v[1:])
    return v


_CONTINUATION = re.compile(r"^(.+?)\*(\d{1,3})(\*?)$")
_ATTR_CHAR = re.compile(r"[^A-Za-z0-9!#$&+\-.^_`|~]")


def _merge_rfc2231(raw: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Joins RFC 2231 §3 continuations (name*0, name*1*, ...) into one parameter, kept at the
    position of its first segment. A parameter with any extended segment comes out as
    ``name*`` with value ``charset'lang'%-encoded``, the form an IMAP client decodes (as
    Dovecot returns it); segments in plain form are %-encoded when merged into it."""
    if not any("*" in name for name, _ in raw):
        return raw
    order: list[str] = []
    plain: dict[str, str] = {}
    segments: dict[str, dict[int, tuple[bool, str]]] = {}
    for name, value in raw:
        m = _CONTINUATION.match(name)
        if m:
            base = m.group(1)
            key = "\x00" + base
            if key not in segments:
                segments[key] = {}
                order.append(key)
            segments[key].setdefault(int(m.group(2)), (m.group(3) == "*", value))
        elif name not in plain:
            plain[name] = value
            order.append(name)
    out: list[tuple[str, str]] = []
    for key in order:
        if not key.startswith("\x00"):
            out.append((key, plain[key]))
            continue
        base = key[1:]
        parts = segments[key]
        if base in plain or base + "*" in plain:
            continue  # a single-form parameter of the same name wins
        ordered = [parts[i] for i in sorted(parts)]
        if any(ext for ext, _ in ordered):
            pieces: list[str] = []
            for idx, (ext, value) in enumerate(ordered):
                if ext:
                    pieces.append(value)
                else:
                    enc = _ATTR_CHAR.sub(
                        lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), value
                    )
                    pieces.append(("''" + enc) if idx == 0 else enc)
            out.append((base + "*", "".join(pieces)))
        else:
            out.append((base, "".join(v for _, v in ordered)))
    return out


def parse_mime_field(value: str) -> tuple[str, list[tuple[str, str]]]:
    """(lower-case main value, [(lower-case name, value)]) of a Content-Type or
    Content-Disposition value; quoted values unquoted, comments dropped, order kept, the first
    of repeated names kept, RFC 2231 continuations joined."""
    s = _strip_comments(value[:MAX_STRUCTURED_CHARS])
    pieces = _split_params(s)
    main = pieces[0].strip(" \t\r\n").lower()
    params: list[tuple[str, str]] = []
    seen: set[str] = set()
    for piece in pieces[1:]:
        name, eq, val = piece.partition("=")
        name = name.strip(" \t\r\n").lower()
        if not eq or not name or name in seen:
            continue
        seen.add(name)
        params.append((name, _unquote(val)))
    return main, _merge_rfc2231(params)


def param_value(params: list[tuple[str, str]], name: str) -> str | None:
    for n, v in params:
        if n == name:
            return v
    return None
