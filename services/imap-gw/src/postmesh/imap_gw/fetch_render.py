"""ENVELOPE and BODY / BODYSTRUCTURE as IMAP response data (RFC 9051 §7.5.2, grammar §9).

Pure functions from the typed structures of :mod:`.backend` to bytes; no session, no I/O.
Strings go out quoted when they can and as literals when they must: CR, LF, NUL or 8-bit
octets (a quoted string is 7-bit text under IMAP4rev1, RFC 3501 §4.3), or very long.
"""

from __future__ import annotations

import base64

from postmesh.imap_gw.backend import Address, BodyPart, Envelope

NIL = b"NIL"
_MAX_QUOTED = 1024


def string(value: str | bytes) -> bytes:
    """``string``: quoted if 7-bit, printable and short, else a literal."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) <= _MAX_QUOTED and raw.isascii() and not any(c in raw for c in b"\0\r\n"):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def nstring(value: str | bytes | None) -> bytes:
    return NIL if value is None else string(value)


def _nonempty(value: str) -> bytes:
    """An nstring where the empty value means absent (NIL)."""
    return string(value) if value else NIL


def encode_word(text: str) -> str:
    """RFC 2047 encoded-word(s) for non-ASCII text, so an IMAP4rev1 client sees what the
    message had: the store keeps display names decoded (see :func:`address`)."""
    if text.isascii():
        return text
    # RFC 2047 §2: an encoded-word is at most 75 characters; split on characters, not bytes.
    words: list[str] = []
    chunk = ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    return " ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    )


def address(a: Address, *, utf8: bool) -> bytes:
    """``address = "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")"``; a group start
    has a NIL host, a group end NIL mailbox and host (RFC 9051 §7.5.2)."""
    name = a.name if utf8 else encode_word(a.name)
    return b"(%s %s %s %s)" % (
        _nonempty(name),
        _nonempty(a.adl),
        _nonempty(a.mailbox),
        _nonempty(a.host),
    )


def address_list(addrs: tuple[Address, ...], *, utf8: bool) -> bytes:
    if not addrs:
        return NIL
    return b"(" + b"".join(address(a, utf8=utf8) for a in addrs) + b")"


def envelope(env: Envelope, *, utf8: bool = False) -> bytes:
    """``envelope``: date, subject (raw: encoded-words stay encoded), the six address lists,
    In-Reply-To and Message-ID. ``utf8``: the client enabled UTF-8 (RFC 6855 / IMAP4rev2),
    so display names may go out as UTF-8 rather than as encoded-words."""
    return (
        b"("
        + b" ".join(
            (
                nstring(env.date),
                nstring(env.subject),
                address_list(env.from_, utf8=utf8),
                address_list(env.sender, utf8=utf8),
                address_list(env.reply_to, utf8=utf8),
                address_list(env.to, utf8=utf8),
                address_list(env.cc, utf8=utf8),
                address_list(env.bcc, utf8=utf8),
                nstring(env.in_reply_to),
                nstring(env.message_id),
            )
        )
        + b")"
    )


def _params(params: tuple[tuple[str, str], ...]) -> bytes:
    """``body-fld-param``: NIL when there are none."""
    if not params:
        return NIL
    return b"(" + b" ".join(string(k.upper()) + b" " + string(v) for k, v in params) + b")"


def _disposition(part: BodyPart) -> bytes:
    if not part.disposition:
        return NIL
    return b"(" + string(part.disposition.upper()) + b" " + _params(part.disposition_params) + b")"


def _language(langs: tuple[str, ...]) -> bytes:
    if not langs:
        return NIL
    if len(langs) == 1:
        return string(langs[0])
    return b"(" + b" ".join(string(x) for x in langs) + b")"


def _ext_tail(part: BodyPart) -> bytes:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc, common to both extension forms."""
    return b" ".join((_disposition(part), _language(part.language), nstring(part.location)))


def body(part: BodyPart, *, extensible: bool, utf8: bool = False) -> bytes:
    """``body``: BODYSTRUCTURE when ``extensible`` (with extension data: MD5, disposition,
    language, location), else the BODY form without it."""
    if part.is_multipart:
        children = b"".join(body(c, extensible=extensible, utf8=utf8) for c in part.parts)
        out = children + b" " + string(part.subtype.upper())
        if extensible:
            # body-ext-mpart = body-fld-param SP body-fld-dsp SP body-fld-lang SP body-fld-loc
            out += b" " + _params(part.params) + b" " + _ext_tail(part)
        return b"(" + out + b")"
    fields = b" ".join(
        (
            string(part.type.upper()),
            string(part.subtype.upper()),
            _params(part.params),
            nstring(part.id),
            nstring(part.description),
            string(part.encoding.upper()),
            b"%d" % part.size,
        )
    )
    if part.is_message and part.message_body is not None and part.message_envelope is not None:
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        fields += b" %s %s %d" % (
            envelope(part.message_envelope, utf8=utf8),
            body(part.message_body, extensible=extensible, utf8=utf8),
            part.lines,
        )
    elif part.type == "text":
        fields += b" %d" % part.lines
    if extensible:
        # body-ext-1part = body-fld-md5 SP body-fld-dsp SP body-fld-lang SP body-fld-loc
        fields += b" " + nstring(part.md5) + b" " + _ext_tail(part)
    return b"(" + fields + b")"
