"""ENVELOPE and BODYSTRUCTURE (RFC 9051 §7.5.2) with byte offsets, from the raw message.

MIME boundaries are found on the raw bytes (the email package does not keep offsets), so
the IMAP gateway can cut BODY[1.2], BODY[1.2.HEADER] and BODY[1.2.MIME] straight out of the
stored message. Any input yields a MessageMeta; nothing here raises on malformed mail.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime.addresses import parse_addresses
from postmesh.store.mime.headers import Fields, find_body_start, param_value, parse_mime_field

log = logging.getLogger(__name__)

# Nesting cap for multipart and message/rfc822 levels. protobuf (upb) refuses to decode
# messages nested deeper than 100, and every level is a nested BodyPart in MessageMeta, so stay
# well below that (Dovecot's max_nested_mime_parts is 100 for the same kind of reason).
MAX_DEPTH = 50
# Cap on the number of body parts per message (Dovecot: max_total_mime_parts); beyond it the
# rest of a multipart is one opaque part.
MAX_PARTS = 1000

_BOUNDARY_TAIL = re.compile(rb"(?:--)?[ \t]*(?:\r?\n|\r?\Z)")
_TYPE = re.compile(r"^([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)/([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)$")
_SLASH_SPACE = re.compile(r"\s*/\s*")
_MESSAGE_SUBTYPES = frozenset({"rfc822", "global"})
# RFC 2045 §6.4: only these leave the embedded message readable as-is.
_IDENTITY_ENCODINGS = frozenset({"7BIT", "8BIT", "BINARY"})


# Work caps per message, so a hostile message costs bounded CPU however it is built: the
# characters of structured fields (addresses, Content-Type, Content-Disposition) we tokenise,
# and the boundary candidates ("--" + boundary found by bytes.find) we inspect in Python.
MAX_STRUCTURED_CHARS_PER_MESSAGE = 512 * 1024
MAX_BOUNDARY_CANDIDATES = 100_000


@dataclass(slots=True)
class _Budget:
    parts_left: int = MAX_PARTS
    structured_left: int = MAX_STRUCTURED_CHARS_PER_MESSAGE
    candidates_left: int = MAX_BOUNDARY_CANDIDATES

    def take(self, value: str) -> str:
        """``value``, cut to what is left of the structured-field budget."""
        if len(value) > self.structured_left:
            value = value[: self.structured_left]
        self.structured_left -= len(value)
        return value


def _lines(raw: bytes, start: int, end: int) -> int:
    """Text lines in raw[start:end] (RFC 9051 body-fld-lines): its line ends. A part's last
    line usually has none, its CRLF belonging to the next boundary (RFC 2046 §5.1.1); it is
    not counted, as UW-IMAP and Dovecot count (a 1-line text part in a multipart has 0)."""
    return raw.count(b"\n", start, end) if end > start else 0


def fill_envelope(env: store_pb2.Envelope, fields: Fields, budget: _Budget | None = None) -> None:
    """RFC 9051 §7.5.2 envelope from a header's fields (first occurrence of each field)."""
    budget = budget or _Budget()
    date = fields.first("date")
    if date is not None:
        env.date = date
        env.has_date = True
    subject = fields.first("subject")
    if subject is not None:
        env.subject = subject
        env.has_subject = True
    in_reply_to = fields.first("in-reply-to")
    if in_reply_to is not None:
        env.in_reply_to = in_reply_to
        env.has_in_reply_to = True
    message_id = fields.first("message-id")
    if message_id is not None:
        env.message_id = message_id
        env.has_message_id = True
    lists: dict[str, list[store_pb2.Address]] = {}
    for name in ("from", "sender", "reply-to", "to", "cc", "bcc"):
        value = fields.first(name)
        value = budget.take(value) if value else value
        lists[name] = (
            [
                store_pb2.Address(name=a.name, adl=a.adl, mailbox=a.mailbox, host=a.host)
                for a in parse_addresses(value)
            ]
            if value
            else []
        )
    # RFC 9051 §7.5.2: an absent or empty Sender / Reply-To takes the value of From.
    for name in ("sender", "reply-to"):
        if not lists[name]:
            lists[name] = lists["from"]
    getattr(env, "from").extend(lists["from"])
    env.sender.extend(lists["sender"])
    env.reply_to.extend(lists["reply-to"])
    env.to.extend(lists["to"])
    env.cc.extend(lists["cc"])
    env.bcc.extend(lists["bcc"])


def _find_delimiters(
    raw: bytes, boundary: bytes, start: int, end: int, budget: _Budget
) -> list[tuple[int, int, bool]]:
    """Delimiter lines of ``boundary`` in raw[start:end]: (line start, line end, is close).

    RFC 2046 §5.1.1: a delimiter is "--" boundary at the start of a line, optionally followed
    by "--" (the close delimiter) and transport padding. Anything else after the boundary
    means the line is not a delimiter, so a nested boundary that merely starts with ours is
    not mistaken for it.
    """
    marker = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    pos = start
    while budget.candidates_left > 0:
        i = raw.find(marker, pos, end)
        if i < 0:
            break
        budget.candidates_left -= 1
        pos = i + len(marker)
        if i != start and raw[i - 1] != 0x0A:
            continue
        m = _BOUNDARY_TAIL.match(raw, pos, end)
        if m is None:
            continue
        close = raw.startswith(b"--", pos, end)
        found.append((i, m.end(), close))
        if close:
            break
        pos = m.end()
    return found


def _line_break_before(raw: bytes, i: int, floor: int) -> int:
    """Start of the line break that ends just before offset i (it belongs to the delimiter)."""
    if i - 2 >= floor and raw[i - 2 : i] == b"\r\n":
        return i - 2
    if i - 1 >= floor and raw[i - 1] == 0x0A:
        return i - 1
    return i


class _Parser:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.budget = _Budget()

    def entity(
        self,
        part: store_pb2.BodyPart,
        start: int,
        end: int,
        depth: int,
        default: tuple[str, str],
        fields_out: list[Fields] | None = None,
    ) -> None:
        """Fills ``part`` for the MIME entity raw[start:end] (header and body)."""
        raw = self.raw
        self.budget.parts_left -= 1
        body_start = find_body_start(raw, start, end)
        fields = Fields.parse(raw[start:body_start])
        if fields_out is not None:
            fields_out.append(fields)
        part.header_offset = start
        part.body_offset = body_start
        part.size = end - body_start

        ctype = fields.first("content-type")
        main, params = parse_mime_field(self.budget.take(ctype)) if ctype else ("", [])
        m = _TYPE.match(_SLASH_SPACE.sub("/", main))
        if m is None:
            # RFC 2045 §5.2: absent or invalid Content-Type means the default type; an
            # invalid one does not keep its parameters.
            typ, sub = default
            params = []
        else:
            typ, sub = m.group(1), m.group(2)

        cte = fields.first("content-transfer-encoding")
        tokens = cte.replace('"', " ").split() if cte else []
        encoding = tokens[0].upper() if tokens else "7BIT"
        disposition = fields.first("content-disposition")
        if disposition:
            disp, disp_params = parse_mime_field(self.budget.take(disposition))
            part.disposition = disp
            part.disposition_params.extend(
                store_pb2.BodyParam(name=k, value=v) for k, v in disp_params
            )
        for field, attr in (
            ("content-id", "id"),
            ("content-description", "description"),
            ("content-md5", "md5"),
        ):
            value = fields.first(field)
            if value is not None:
                setattr(part, attr, value)
        language = fields.first("content-language")
        if language:
            part.language.extend(t.strip() for t in language.split(",") if t.strip())
        location = fields.first("content-location")
        if location:
            # RFC 2557 §4.4.1: a folded URL is read without its white space.
            part.location = "".join(location.split())

        if typ == "multipart":
            boundary = param_value(params, "boundary")
            delims = (
                _find_delimiters(
                    raw, boundary.encode("utf-8", "replace"), body_start, end, self.budget
                )
                if boundary
                else []
            )
            if delims and depth < MAX_DEPTH and self.budget.parts_left > 0:
                self._multipart(part, typ, sub, params, encoding, delims, end, depth)
                return
            if not delims:
                # No boundary, or none found in the body: RFC 2046 §5.1.1 leaves it undefined;
                # read it as the default type (RFC 2045 §5.2), as Dovecot and Python do.
                typ, sub, params = "text", "plain", []
            else:
                typ, sub, params = "application", "octet-stream", []
        elif typ == "message" and sub in _MESSAGE_SUBTYPES:
            if encoding in _IDENTITY_ENCODINGS and depth < MAX_DEPTH and self.budget.parts_left > 0:
                self._basic(part, typ, sub, params, encoding)
                part.lines = _lines(raw, body_start, end)
                inner: list[Fields] = []
                self.entity(part.message_body, body_start, end, depth + 1, ("text", "plain"), inner)
                fill_envelope(part.message_envelope, inner[0], self.budget)
                return
            # An encoded or too deeply nested message cannot be parsed in place; the IMAP
            # grammar has no message/rfc822 without an envelope, so it becomes opaque.
            typ, sub, params = "application", "octet-stream", []

        self._basic(part, typ, sub, params, encoding)
        if typ == "text":
            part.lines = _lines(raw, body_start, end)

    @staticmethod
    def _basic(
        part: store_pb2.BodyPart, typ: str, sub: str, params: list[tuple[str, str]], encoding: str
    ) -> None:
        part.type = typ
        part.subtype = sub
        if typ == "text" and param_value(params, "charset") is None:
            # RFC 2046 §4.1.2: the default charset is US-ASCII.
            params = [("charset", "us-ascii"), *params]
        part.params.extend(store_pb2.BodyParam(name=k, value=v) for k, v in params)
        part.encoding = encoding

    def _multipart(
        self,
        part: store_pb2.BodyPart,
        typ: str,
        sub: str,
        params: list[tuple[str, str]],
        encoding: str,
        delims: list[tuple[int, int, bool]],
        end: int,
        depth: int,
    ) -> None:
        raw = self.raw
        part.type = typ
        part.subtype = sub
        part.params.extend(store_pb2.BodyParam(name=k, value=v) for k, v in params)
        part.encoding = encoding
        # RFC 2046 §5.1.5: in a digest the default part type is message/rfc822.
        child_default = ("message", "rfc822") if sub == "digest" else ("text", "plain")
        spans: list[tuple[int, int]] = []
        for idx, (_, line_end, close) in enumerate(delims):
            if close:
                break
            if idx + 1 < len(delims):
                nxt = delims[idx + 1][0]
                spans.append((line_end, max(line_end, _line_break_before(raw, nxt, line_end))))
            else:
                # No close delimiter (truncated message): the last part runs to the end.
                spans.append((line_end, end))
        if not spans:
            # Only a close delimiter: IMAP needs at least one part; give an empty one.
            first = delims[0][1]
            spans.append((first, first))
        for idx, (s, e) in enumerate(spans):
            child = part.parts.add()
            if self.budget.parts_left <= 1 and idx + 1 < len(spans):
                # Out of budget: the rest of this multipart becomes one opaque part.
                self.budget.parts_left -= 1
                child.header_offset = s
                child.body_offset = s
                child.size = spans[-1][1] - s
                self._basic(child, "application", "octet-stream", [], "7BIT")
                break
            self.entity(child, s, e, depth + 1, child_default)


def extract_meta(raw: bytes) -> store_pb2.MessageMeta:
    """ENVELOPE, BODYSTRUCTURE with part offsets, and the header block of a raw RFC 5322
    message (``uid`` left 0). Never raises: malformed input gives a best-effort result."""
    meta = store_pb2.MessageMeta()
    try:
        parser = _Parser(raw)
        top: list[Fields] = []
        parser.entity(meta.body, 0, len(raw), 0, ("text", "plain"), top)
        meta.header = raw[: meta.body.body_offset]
        meta.body_offset = meta.body.body_offset
        fill_envelope(meta.envelope, top[0], parser.budget)
    except Exception:  # a bug must not lose mail: fall back to a plain single part
        log.exception("message structure extraction failed; storing a minimal structure")
        body_start = find_body_start(raw, 0, len(raw))
        meta = store_pb2.MessageMeta(header=raw[:body_start], body_offset=body_start)
        meta.body.CopyFrom(
            store_pb2.BodyPart(
                type="text",
                subtype="plain",
                params=[store_pb2.BodyParam(name="charset", value="us-ascii")],
                encoding="7BIT",
                size=len(raw) - body_start,
                lines=_lines(raw, body_start, len(raw)),
                body_offset=body_start,
            )
        )
    return meta
