"""What the store answers, as typed values (the gateways' view of ``store.proto``).

Shaped for IMAP (RFC 9051) and POP3: the store client (:mod:`.client`) returns these, and the
gateways' sessions work on them without seeing protobuf.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AppendResult:
    """APPENDUID (RFC 4315 §3), and the MODSEQ and flags the new message was stored with (0
    and none from a store that does not say)."""

    uidvalidity: int
    uid: int
    modseq: int = 0
    flags: tuple[str, ...] = ()
    # With claim_recent: the caller's recent UIDs are recent_first to uid (0: none claimed).
    recent_first: int = 0


@dataclass(frozen=True)
class CopyResult:
    """COPYUID (RFC 4315 §3): ``source_uids[i]`` became ``dest_uids[i]``; MOVE also lists the
    UIDs it removed from the source."""

    uidvalidity: int
    source_uids: Sequence[int]
    dest_uids: Sequence[int]
    expunged_uids: Sequence[int] = ()


@dataclass(frozen=True)
class SearchResult:
    """Matching UIDs ascending and the highest MODSEQ among them (RFC 7162 §3.1.5; 0: none)."""

    uids: Sequence[int]
    highest_modseq: int = 0


@dataclass(frozen=True)
class MailboxInfo:
    name: str
    uidvalidity: int
    uidnext: int
    messages: int = 0
    unseen: int = 0
    highestmodseq: int = 0
    special_use: str = ""
    subscribed: bool = False
    deleted: int = 0  # messages flagged \Deleted (STATUS DELETED, RFC 9051 §6.3.11)
    size: int = 0  # octets of all messages (STATUS SIZE, RFC 8438)
    noselect: bool = False  # a parent kept only for its inferiors (RFC 9051 §6.3.5)
    has_children: bool = False
    # IMAP4rev1 \Recent (RFC 3501 §2.3.2): no session has claimed the messages from this UID
    # on, and ``recent`` of them exist (STATUS RECENT).
    first_recent_uid: int = 1
    recent: int = 0


@dataclass(frozen=True)
class RecentClaim:
    """A session's claim of \\Recent (RFC 3501 §2.3.2): its recent messages are the UIDs from
    ``first`` to ``last`` (none when ``last < first``)."""

    first: int
    last: int
    uidvalidity: int


@dataclass(frozen=True)
class MailboxTree:
    """Every mailbox of a user (\\Noselect parents too) and the subscribed names, which may
    name mailboxes that do not exist (RFC 9051 §6.3.7)."""

    mailboxes: Sequence[MailboxInfo]
    subscriptions: Sequence[str]


@dataclass(frozen=True)
class Quota:
    """The user's one quota root (RFC 9208): usage and limits; a limit of 0 is none."""

    storage_used: int  # octets
    storage_limit: int
    messages_used: int
    message_limit: int


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    flags: tuple[str, ...]
    size: int
    internal_date: int  # Unix seconds
    modseq: int = 0


@dataclass(frozen=True)
class MessagePage:
    messages: Sequence[MessageMeta]
    more: bool


@dataclass(frozen=True, slots=True)
class FlagPage:
    """What SELECT needs of each message, as parallel columns in ascending UID order: the
    flags of ``uids[i]`` are ``flag_sets[flag_index[i]]`` (the store's ListMessageFlags)."""

    uids: Sequence[int]
    modseqs: Sequence[int]
    flag_index: Sequence[int]
    flag_sets: Sequence[tuple[str, ...]]
    more: bool


@dataclass(frozen=True, slots=True)
class Address:
    """An envelope address (RFC 9051 §7.5.2): ``name`` is the decoded display name; a group
    start has an empty host and the group name as mailbox; a group end is all empty."""

    name: str
    adl: str
    mailbox: str
    host: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """The RFC 9051 §7.5.2 envelope; None is an absent header (NIL), "" an empty one."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One MIME entity as parsed at delivery, with its offsets in the whole message: the
    header is raw[header_offset:body_offset], the body raw[body_offset:body_offset + size]."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()
    id: str | None = None
    description: str | None = None
    encoding: str = "7BIT"
    size: int = 0
    lines: int = 0
    md5: str | None = None
    disposition: str | None = None
    disposition_params: tuple[tuple[str, str], ...] = ()
    language: tuple[str, ...] = ()
    location: str | None = None
    parts: tuple[BodyPart, ...] = ()  # multipart/*
    message_envelope: Envelope | None = None  # message/rfc822 and message/global
    message_body: BodyPart | None = None
    header_offset: int = 0
    body_offset: int = 0

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    @property
    def is_message(self) -> bool:
        return self.message_body is not None


class MessageStructure:
    """What FETCH needs for ENVELOPE, BODY[STRUCTURE] and header sections without the
    content: parsed once at delivery (the store's GetMessageMeta).

    The envelope and the body tree are built on first use from the store's answer: a FETCH of
    header sections of a thousand messages needs neither, and building them was most of its
    time."""

    __slots__ = ("_body", "_envelope", "_make_body", "_make_envelope", "_source", "header", "uid")

    def __init__(
        self,
        uid: int,
        header: bytes,  # up to and including the blank line
        envelope: Callable[[Any], Envelope],
        body: Callable[[Any], BodyPart],
        source: Any = None,
    ) -> None:
        """``envelope(source)`` and ``body(source)`` build them: module-level functions and
        the store's answer, not two closures made per message (ADR 0056)."""
        self.uid = uid
        self.header = header
        self._make_envelope = envelope
        self._make_body = body
        self._source = source
        self._envelope: Envelope | None = None
        self._body: BodyPart | None = None

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = self._make_envelope(self._source)
        return self._envelope

    @property
    def body(self) -> BodyPart:
        if self._body is None:
            self._body = self._make_body(self._source)
        return self._body


@dataclass(frozen=True)
class Changes:
    """CONDSTORE/QRESYNC (RFC 7162): what changed after a MODSEQ; ``uidvalidity`` of the
    mailbox answering (0: not told)."""

    changed: Sequence[MessageMeta]
    expunged_uids: Sequence[int]
    highestmodseq: int
    uidvalidity: int = 0
    # The store no longer has every tombstone since the MODSEQ asked (its janitor removed
    # them): ``expunged_uids`` may miss some; compare UIDs instead (imap-gw's vanished.py).
    expunged_incomplete: bool = False
    # The first UID no session has claimed (\Recent; 0: not told).
    first_recent_uid: int = 0


class FlagsMode(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True)
class FlagsResult:
    """A conditional STORE (RFC 7162 §3.1.3): the messages as they are now (changed or not),
    and the UIDs left alone because their MODSEQ was above UNCHANGEDSINCE."""

    updated: Sequence[MessageMeta]
    modified: Sequence[int]


@dataclass(frozen=True, slots=True)
class LockResult:
    """RFC 1939 §8 exclusive access to a maildrop (the store's MaildropLockService):
    ``granted``, or the session that holds it."""

    granted: bool
    holder: str = ""


@dataclass(frozen=True, slots=True)
class OpenedMaildrop:
    """The store's OpenMaildrop: the lock and, when granted and the mailbox exists, its
    UIDVALIDITY and first page of messages, read under the lock."""

    lock: LockResult
    uidvalidity: int | None = None
    page: MessagePage | None = None
