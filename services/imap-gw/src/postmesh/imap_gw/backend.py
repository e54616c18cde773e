"""What the IMAP session needs from the rest of the system, as small typed interfaces.

The real implementations call the store and auth gRPC services (:mod:`.grpc_backend`); unit tests
put in-memory fakes behind the same interfaces.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postmesh.imap_gw.parser.search import SearchKey


class MailboxNotFound(Exception):
    """The mailbox does not exist (IMAP ``NO [NONEXISTENT]``)."""


class MessageNotFound(Exception):
    """The message was expunged meanwhile (IMAP ``NO [EXPUNGEISSUED]``)."""


class MailboxExists(Exception):
    """CREATE/RENAME onto a name that exists (IMAP ``NO [ALREADYEXISTS]``, RFC 5530)."""


class MailboxHasChildren(Exception):
    """DELETE of a \\Noselect name with inferiors (IMAP ``NO [HASCHILDREN]``, RFC 9051
    §6.3.5)."""


class MailboxRejected(Exception):
    """The store refused a mailbox name or special-use attribute (INVALID_ARGUMENT): the
    message says why."""


class SearchRejected(Exception):
    """The store refused the search criteria (too many keys, nested too deep): a client error."""


class OverQuota(Exception):
    """The user's storage or message quota would be exceeded (IMAP ``NO [OVERQUOTA]``,
    RFC 9208 §4.1)."""


class StoreRefused(Exception):
    """The store refused a request as invalid for its arguments or the mailbox's state (a size
    that does not match the content, a \\Noselect mailbox): ``NO`` with the store's reason."""


@dataclass(frozen=True)
class AppendResult:
    """APPENDUID (RFC 4315 §3)."""

    uidvalidity: int
    uid: int


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

    __slots__ = ("_body", "_envelope", "_make_body", "_make_envelope", "header", "uid")

    def __init__(
        self,
        uid: int,
        header: bytes,  # up to and including the blank line
        envelope: Callable[[], Envelope],
        body: Callable[[], BodyPart],
    ) -> None:
        self.uid = uid
        self.header = header
        self._make_envelope = envelope
        self._make_body = body
        self._envelope: Envelope | None = None
        self._body: BodyPart | None = None

    @property
    def envelope(self) -> Envelope:
        if self._envelope is None:
            self._envelope = self._make_envelope()
        return self._envelope

    @property
    def body(self) -> BodyPart:
        if self._body is None:
            self._body = self._make_body()
        return self._body


@dataclass(frozen=True)
class Changes:
    """CONDSTORE/QRESYNC (RFC 7162): what changed after a MODSEQ; ``uidvalidity`` of the
    mailbox answering (0: not told)."""

    changed: Sequence[MessageMeta]
    expunged_uids: Sequence[int]
    highestmodseq: int
    uidvalidity: int = 0


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


class MailStore(Protocol):
    async def provision_user(self, user: str) -> None:
        """Make sure the user's INBOX and special-use mailboxes exist (idempotent)."""
        ...

    async def get_mailbox(self, user: str, mailbox: str) -> MailboxInfo:
        """Raises MailboxNotFound."""
        ...

    async def list_mailboxes(self, user: str) -> Sequence[MailboxInfo]: ...

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> MessagePage:
        """Messages with UID > after_uid in ascending UID order, at most ``limit`` of them."""
        ...

    async def list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagPage:
        """UIDs, MODSEQs and flags of the messages with UID > after_uid, ascending, at most
        ``limit`` of them. Raises MailboxNotFound."""
        ...

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        """The raw RFC 5322 message. Raises MessageNotFound."""
        ...

    async def get_structure(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> Sequence[MessageStructure]:
        """Envelope, body structure and header of each message; expunged UIDs are left out."""
        ...

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        """Messages whose MODSEQ is above ``since_modseq`` and UIDs expunged after it."""
        ...

    async def store_flags(
        self, user: str, mailbox: str, uids: Sequence[int], mode: FlagsMode, flags: Sequence[str]
    ) -> Sequence[MessageMeta]:
        """Changes flags; returns the messages' metadata after the change."""
        ...

    async def expunge(self, user: str, mailbox: str) -> Sequence[int]:
        """Removes every message flagged \\Deleted; returns their UIDs."""
        ...

    async def expunge_uids(self, user: str, mailbox: str, uids: Sequence[int]) -> Sequence[int]:
        """UID EXPUNGE (RFC 4315): removes those of ``uids`` flagged \\Deleted; returns them."""
        ...

    async def store_flags_unchanged_since(
        self,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        mode: FlagsMode,
        flags: Sequence[str],
        unchanged_since: int,
    ) -> FlagsResult:
        """STORE with UNCHANGEDSINCE (``unchanged_since`` > 0; RFC 7162 §3.1.3)."""
        ...

    async def search(self, user: str, mailbox: str, criteria: SearchKey) -> SearchResult:
        """SEARCH (RFC 9051 §6.4.4) with criteria already free of message sequence numbers and
        ``$`` (the session turns them into UID sets). Raises SearchRejected, MailboxNotFound."""
        ...

    async def create_mailbox(self, user: str, mailbox: str, special_use: str = "") -> MailboxInfo:
        """CREATE, with missing parents (RFC 9051 §6.3.4). Raises MailboxExists,
        MailboxRejected."""
        ...

    async def delete_mailbox(self, user: str, mailbox: str) -> int:
        """DELETE (RFC 9051 §6.3.5); how many messages went. Raises MailboxNotFound,
        MailboxHasChildren, MailboxRejected."""
        ...

    async def rename_mailbox(self, user: str, mailbox: str, new_name: str) -> MailboxInfo:
        """RENAME with its inferiors; INBOX's messages move (RFC 9051 §6.3.6). Raises
        MailboxNotFound, MailboxExists, MailboxRejected."""
        ...

    async def set_subscription(self, user: str, mailbox: str, subscribed: bool) -> None:
        """SUBSCRIBE/UNSUBSCRIBE (RFC 9051 §6.3.7-8). Raises MailboxRejected."""
        ...

    async def list_mailbox_tree(self, user: str) -> MailboxTree:
        """Mailboxes and subscriptions in one call (LIST-EXTENDED, RFC 5258)."""
        ...

    async def get_quota(self, user: str) -> Quota: ...

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Sequence[str],
        internal_date: int,
        size: int,
        content: AsyncIterator[bytes],
    ) -> AppendResult:
        """APPEND (RFC 9051 §6.3.12): ``content`` (exactly ``size`` octets) is passed on chunk by
        chunk as it is read; an error raised by ``content`` aborts the append and propagates.
        ``internal_date`` 0 means now. Raises MailboxNotFound, OverQuota, StoreRefused."""
        ...

    async def copy_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        """COPY: the messages of ``uids`` that still exist, all or none of them. Raises
        MailboxNotFound (either mailbox), OverQuota, StoreRefused."""
        ...

    async def move_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        """MOVE (RFC 6851): a copy, then the sources expunged (``expunged_uids``)."""
        ...


class Authenticator(Protocol):
    async def authenticate(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        """The canonical user name on success, None when the credentials are wrong."""
        ...
