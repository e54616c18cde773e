"""Server side of the SASL mechanisms PLAIN (RFC 4616) and LOGIN, shared by SMTP, IMAP and POP3."""

from __future__ import annotations

import base64
import binascii


class SaslError(ValueError):
    """The client's SASL data is malformed (answer 501 / BAD / -ERR)."""


def b64decode_strict(data: str | bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SaslError("invalid base64 data") from e


def decode_plain(response: str | bytes) -> tuple[str, str, str]:
    """``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2) -> (authzid, authcid, password)."""
    raw = b64decode_strict(response)
    parts = raw.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN response must have exactly three NUL-separated fields")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError as e:
        raise SaslError("PLAIN response is not UTF-8") from e
    if not authcid or not password:
        raise SaslError("empty user name or password")
    return authzid, authcid, password


def decode_login_field(response: str | bytes) -> str:
    """One step of the LOGIN mechanism (base64 of the user name or of the password)."""
    try:
        value = b64decode_strict(response).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SaslError("LOGIN response is not UTF-8") from e
    if not value:
        raise SaslError("empty LOGIN response")
    return value


def encode_challenge(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
