"""Normalisation and validation of the caller's names and flags (RFC 9051)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from postmesh.store.errors import InvalidArgument
from postmesh.store.model import INBOX, FlagsMode

HIERARCHY_SEPARATOR = "/"
MAX_USER_CHARS = 320  # RFC 5321 section 4.5.3.1: 64 local part + @ + 255 domain
# Dovecot and Cyrus cap names near 255 octets; longer ones break file-system backed peers
# (migration with imapsync/dsync) and are never needed.
MAX_MAILBOX_BYTES = 255
MAX_QUEUE_ID_CHARS = 128
MAX_KEYWORD_CHARS = 100
MAX_FLAGS = 64

# RFC 9051 section 2.3.2: the system flags a client may store. \Recent is gone in IMAP4rev2.
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
SEEN = "\\Seen"
# RFC 6154 section 2 special-use attributes this store lets a mailbox carry.
SPECIAL_USES = {
    f.lower(): f for f in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash", "\\Important")
}
DELETED = "\\Deleted"

# RFC 9051 section 9: flag-keyword = atom; ATOM-CHAR is any CHAR except atom-specials
# ( ) { SP CTL % * " \ ] -- and CHAR is 7-bit.
_KEYWORD = re.compile(r"^[\x21-\x7e]+$")
_ATOM_SPECIALS = set('(){%*"\\]')
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _has_control(s: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in s)


def user(value: str) -> str:
    if not value:
        raise InvalidArgument("user is empty")
    if len(value) > MAX_USER_CHARS or _has_control(value) or value != value.strip():
        raise InvalidArgument(f"invalid user {value[:80]!r}")
    return value


def queue_id(value: str) -> str:
    # The delivery key needs it: without a queue id Deliver could not be idempotent.
    if not value:
        raise InvalidArgument("queue_id is empty")
    if len(value) > MAX_QUEUE_ID_CHARS or _has_control(value):
        raise InvalidArgument(f"invalid queue_id {value[:80]!r}")
    return value


def mailbox_name(value: str, *, allow_empty: bool = True) -> str:
    """Canonical mailbox name: empty means INBOX (where ``allow_empty``), INBOX is case-
    insensitive (RFC 9051 section 5.1), NFC-normalised UTF-8 (Net-Unicode, RFC 5198), "/"
    separates levels."""
    if not value:
        if allow_empty:
            return INBOX
        raise InvalidArgument("mailbox name is empty")
    name = unicodedata.normalize("NFC", value)
    if _has_control(name) or "%" in name or "*" in name:
        # LIST wildcards (RFC 9051 section 6.3.9) and controls cannot be named reliably.
        raise InvalidArgument(f"invalid mailbox name {value[:80]!r}: wildcard or control character")
    if len(name.encode()) > MAX_MAILBOX_BYTES:
        raise InvalidArgument(f"mailbox name longer than {MAX_MAILBOX_BYTES} octets")
    parts = name.split(HIERARCHY_SEPARATOR)
    if any(p == "" for p in parts):
        raise InvalidArgument(f"invalid mailbox name {value[:80]!r}: empty hierarchy level")
    if any(p in (".", "..") for p in parts):
        # Path-like levels: refused so no export to a file-system layout can be escaped.
        raise InvalidArgument(f"invalid mailbox name {value[:80]!r}: '.' or '..' level")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    return HIERARCHY_SEPARATOR.join(parts)


def special_use(value: str) -> str:
    """RFC 6154 section 2 attribute with its backslash, canonical case; empty for none.
    \\All and \\Flagged are refused: they promise virtual views this store does not build."""
    if not value:
        return ""
    canonical = SPECIAL_USES.get(value.lower())
    if canonical is None:
        raise InvalidArgument(f"special-use {value[:40]!r} is not supported")
    return canonical


def uid_range(first: int, last: int) -> tuple[int, int]:
    """An inclusive UID range; ``last`` 0 stands for "*" (the highest UID)."""
    uid(first)
    if last == 0:
        return first, 0xFFFFFFFF
    uid(last)
    if first > last:
        raise InvalidArgument(f"invalid uid range {first}:{last}: first is above last")
    return first, last


def flag(value: str) -> str:
    if value.startswith("\\"):
        canonical = SYSTEM_FLAGS.get(value.lower())
        if canonical is None:
            raise InvalidArgument(f"flag {value[:80]!r} cannot be stored")
        return canonical
    if (
        len(value) > MAX_KEYWORD_CHARS
        or not _KEYWORD.match(value)
        or any(c in _ATOM_SPECIALS for c in value)
    ):
        raise InvalidArgument(f"invalid keyword {value[:80]!r}")
    return value


def flags(values: Iterable[str]) -> tuple[str, ...]:
    """Canonical, de-duplicated and sorted (system flags first) so equal sets compare equal."""
    out = {flag(v) for v in values}
    if len(out) > MAX_FLAGS:
        raise InvalidArgument(f"too many flags (at most {MAX_FLAGS})")
    return sort_flags(out)


def sort_flags(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values), key=lambda f: (not f.startswith("\\"), f)))


def apply_flags(current: Iterable[str], mode: FlagsMode, given: tuple[str, ...]) -> tuple[str, ...]:
    have = set(current)
    if mode is FlagsMode.ADD:
        have |= set(given)
    elif mode is FlagsMode.REMOVE:
        have -= set(given)
    else:
        have = set(given)
    if len(have) > MAX_FLAGS:
        raise InvalidArgument(f"too many flags (at most {MAX_FLAGS})")
    return sort_flags(have)


def blob_id(value: str) -> str:
    if not _SHA256_HEX.match(value):
        raise InvalidArgument(f"blob_id {value[:80]!r} is not a lowercase sha256 hex digest")
    return value


def uid(value: int) -> int:
    if not 0 < value <= 0xFFFFFFFF:
        raise InvalidArgument(f"invalid uid {value}")
    return value
