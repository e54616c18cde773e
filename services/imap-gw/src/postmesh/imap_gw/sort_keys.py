"""What SORT and THREAD order messages by (RFC 5256 §2-3, RFC 5957): the base subject, the
sent date, the first address of a field, and the sort itself. Pure functions of values taken
from the store's metadata (:class:`Fields`); no session, no store calls."""

from __future__ import annotations

import datetime
import email.header
import email.utils
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from postmesh.imap_gw.backend import Address
from postmesh.imap_gw.parser.sort import SortCriterion, SortKey

# RFC 5256 §2.1 ABNF: subj-blob = "[" *BLOBCHAR "]" *WSP (BLOBCHAR: anything but "[" and "]"),
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":", subj-trailer = "(fwd)" / WSP.
_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t]+)", re.IGNORECASE)
_BLOB_PREFIX = re.compile(rf"^{_BLOB}")
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])$", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\n]+")
# The msg-ids of References and In-Reply-To, leniently: what a client's threading sees too.
_MSG_ID = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True, slots=True)
class Fields:
    """One message as SORT and THREAD see it. ``seq`` orders ties (RFC 5256 §3: the order of
    the messages in the mailbox)."""

    uid: int
    internal_date: int  # Unix seconds
    size: int
    date: str | None = None  # the Date field, raw
    subject: str | None = None  # raw (encoded-words not decoded)
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str = ""


def decoded(value: str) -> str:
    """RFC 2047 encoded-words decoded (RFC 5256 §2.1 step 1); undecodable text stays as it is."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def base_subject(subject: str | None) -> tuple[str, bool]:
    """RFC 5256 §2.1: the base subject, and whether a reply or forward marker was removed (the
    "is a reply or forward" of THREAD=REFERENCES' step 5)."""
    text = _SPACES.sub(" ", decoded(subject or ""))
    marked = False
    while True:
        # (2) trailers: "(fwd)" and white space at the end.
        while (m := _TRAILER.search(text)) is not None:
            marked |= not m.group(0).isspace()
            text = text[: m.start()]
        # (3)-(5) leaders and blobs at the start, until neither is left.
        while True:
            m = _LEADER.match(text)
            if m is not None and m.end() > 0:
                marked |= not m.group(0).isspace()
                text = text[m.end() :]
                continue
            b = _BLOB_PREFIX.match(text)
            if b is not None and text[b.end() :]:
                text = text[b.end() :]
                continue
            break
        # (6) "[fwd: ... ]" around the rest: unwrap it and start again at (2).
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            marked = True
            continue
        return text, marked


def casemap(text: str) -> str:
    """The i;ascii-casemap collation's key (RFC 4790 §9.2): ASCII letters upper-cased. What
    THREAD groups subjects by."""
    return text.translate(_UPPER)


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def unicode_casemap(text: str) -> str:
    """The i;unicode-casemap key (RFC 5051): case-mapped, then decomposed (NFKD), so "Äpfel"
    sorts beside "Apfel", not after every ASCII subject. RFC 5256 names i;ascii-casemap; the
    sort keys use this one, as Dovecot does, so non-English subjects and names sort where a
    reader looks for them."""
    return unicodedata.normalize("NFKD", text.upper())


def sent_date(fields: Fields) -> int:
    """The Date field in UTC seconds; the internal date when it is missing or cannot be
    parsed (RFC 5256 §2.2)."""
    if fields.date:
        try:
            parsed = email.utils.parsedate_to_datetime(fields.date)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:  # "-0000": UTC with no zone information (RFC 5322)
                return int(parsed.replace(tzinfo=datetime.UTC).timestamp())
            return int(parsed.timestamp())
    return fields.internal_date


def address_key(addresses: Sequence[Address]) -> str:
    """FROM/TO/CC: the addr-mailbox of the first address (RFC 5256 §3), a group's name when the
    field starts with a group (as Dovecot); "" without one."""
    return unicode_casemap(addresses[0].mailbox) if addresses else ""


def display_key(addresses: Sequence[Address]) -> str:
    """DISPLAYFROM/DISPLAYTO (RFC 5957 §2): the first address's display name, decoded, else
    its addr-spec (a group's name for a group)."""
    if not addresses:
        return ""
    first = addresses[0]
    name = decoded(first.name).strip()
    if not name:
        name = f"{first.mailbox}@{first.host}" if first.host else first.mailbox
    return unicode_casemap(name)


def sort_value(key: SortKey, fields: Fields) -> str | int:
    if key is SortKey.ARRIVAL:
        return fields.internal_date
    if key is SortKey.SIZE:
        return fields.size
    if key is SortKey.DATE:
        return sent_date(fields)
    if key is SortKey.SUBJECT:
        return unicode_casemap(base_subject(fields.subject)[0])
    if key is SortKey.FROM:
        return address_key(fields.from_)
    if key is SortKey.TO:
        return address_key(fields.to)
    if key is SortKey.CC:
        return address_key(fields.cc)
    if key is SortKey.DISPLAYFROM:
        return display_key(fields.from_)
    return display_key(fields.to)


def sort(messages: Sequence[Fields], order: Sequence[SortCriterion]) -> list[Fields]:
    """``messages`` (in mailbox order) ordered by ``order``; ties keep mailbox order (RFC 5256
    §3). One stable sort per criterion, the last first; ``reverse`` keeps stability too."""
    out = list(messages)
    for c in reversed(order):
        values = {id(m): sort_value(c.key, m) for m in out}
        out.sort(key=lambda m: values[id(m)], reverse=c.reverse)
    return out


def message_ids(value: str | None) -> list[str]:
    """The msg-ids of a References or In-Reply-To field, in order, without the brackets."""
    return _MSG_ID.findall(value or "")
