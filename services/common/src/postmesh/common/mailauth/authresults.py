"""The Authentication-Results header field (RFC 8601): rendering ours, and removing forged ones
that claim our authserv-id (§5) before the message is stored."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# RFC 2045 token: what may stand unquoted as a value.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 8601 §2.2 pvalue: also "[local-part @] domain-name" unquoted.
_PVALUE = re.compile(r"(?:[!#$%&'*+\-/=?^_`{|}~.0-9A-Za-z]+@)?[0-9A-Za-z\-.:\[\]]+")
HEADER = "Authentication-Results"
FOLD = "\r\n\t"


@dataclass(frozen=True, slots=True)
class Property:
    """``ptype.property=value``, e.g. ``smtp.mailfrom=example.net`` (RFC 8601 §2.3)."""

    ptype: str  # smtp, header, body, policy
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class MethodResult:
    """``method=result [(comment)] [reason="..."] props``, e.g. ``dkim=pass header.d=x``."""

    method: str
    result: str
    properties: Sequence[Property] = field(default_factory=tuple)
    reason: str = ""
    comment: str = ""


def _printable(text: str) -> str:
    """Client-controlled text (HELO names, addresses, DNS data) as one line of printable text."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _quoted(text: str) -> str:
    return '"' + _printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    return text if _TOKEN.fullmatch(text) else _quoted(text)


def _pvalue(text: str) -> str:
    return text if _PVALUE.fullmatch(text) else _quoted(text)


def _comment(text: str) -> str:
    clean = _printable(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({clean})"


def render_resinfo(r: MethodResult) -> str:
    parts = [f"{r.method}={r.result}"]
    if r.comment:
        parts.append(_comment(r.comment))
    if r.reason:
        parts.append(f"reason={_value(r.reason)}")
    parts += [f"{p.ptype}.{p.name}={_pvalue(p.value)}" for p in r.properties]
    return " ".join(parts)


def authentication_results(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """The whole field, one result per folded line, ending in CRLF; ``none`` when nothing was
    checked (RFC 8601 §2.2 no-result)."""
    if not results:
        return f"{HEADER}: {authserv_id}; none\r\n".encode()
    body = ";".join(FOLD + render_resinfo(r) for r in results)
    return f"{HEADER}: {authserv_id};{body}\r\n".encode()


_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def _authserv_id(value: str) -> str:
    """The authserv-id: the first token of the field, comments and folding removed."""
    text = value.replace("\r\n", " ")
    for _ in range(3):  # nested comments, a few levels
        text = _COMMENT.sub(" ", text)
    return text.strip().split(";", 1)[0].strip().split(" ", 1)[0].strip().lower()


def header_fields(header: bytes) -> list[bytes]:
    """The header section (without the empty line) as whole fields, folding kept, each
    ending in CRLF. Text before the first field name (malformed) stays a "field" of its own."""
    fields: list[bytes] = []
    for line in header.split(b"\r\n")[:-1] if header.endswith(b"\r\n") else header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header section including its last CRLF, the rest from the empty line on)."""
    if message.startswith(b"\r\n"):
        return b"", message  # an empty line first: no header fields at all (RFC 5322 §2.1)
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""  # no body: the whole message is header
    return message[: end + 2], message[end + 2 :]


def strip_forged(message: bytes, authserv_id: str) -> tuple[bytes, int]:
    """Remove every Authentication-Results field in the header section that names our
    authserv-id (RFC 8601 §5: a receiver MUST remove or rename them, or downstream readers
    would trust the sender's claim). Returns the message and how many were removed."""
    ours = authserv_id.lower()
    header, rest = split_message(message)
    kept: list[bytes] = []
    for f in header_fields(header):
        m = _FIELD_NAME.match(f)
        if m and m.group(1).lower() == b"authentication-results":
            value = f[m.end() :].decode("utf-8", "replace")
            if _authserv_id(value) == ours:
                continue
        kept.append(f)
    removed = len(header_fields(header)) - len(kept)
    if not removed:
        return message, 0
    return b"".join(kept) + rest, removed
