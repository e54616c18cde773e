"""Plain records the repository returns; independent of protobuf and of the backends."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for a type hint: the records stay free of protobuf at run time
    from postmesh.api.store.v1 import store_pb2

# Storage chunk size: below gRPC's CHUNK_BYTES and far below MongoDB's 16 MiB document limit
# (GridFS uses the same 255 KiB for the same reason: a chunk plus its keys fits 256 KiB).
BLOB_CHUNK_BYTES = 255 * 1024

INBOX = "INBOX"


class FlagsMode(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: str
    user: str
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int
    special_use: str = ""
    subscribed: bool = False
    # Messages flagged \Deleted and the sum of message sizes (STATUS DELETED / SIZE).
    deleted: int = 0
    size: int = 0
    # A parent kept only for its children after DELETE (RFC 9051 section 6.3.5).
    noselect: bool = False
    has_children: bool = False
    # IMAP4rev1 \Recent (RFC 3501 section 2.3.2): no session has claimed the messages from
    # this UID on; ``recent`` of them are live (STATUS RECENT).
    first_recent_uid: int = 1
    recent: int = 0


@dataclass(frozen=True, slots=True)
class RecentClaim:
    """A ClaimRecent's answer: the claiming session's recent messages are the UIDs from
    ``first`` to ``last`` (none when ``last < first``)."""

    first: int
    last: int
    uidvalidity: int


@dataclass(frozen=True, slots=True)
class Message:
    uid: int
    flags: tuple[str, ...]
    size: int
    internal_date: int
    modseq: int
    blob_id: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for one user's mailbox. Exactly one of ``content`` and ``blob_id`` is set."""

    queue_id: str
    user: str
    mailbox: str = INBOX
    content: bytes | None = None
    blob_id: str | None = None
    flags: tuple[str, ...] = ()
    # Unix seconds; 0 means now.
    internal_date: int = 0


@dataclass(frozen=True, slots=True)
class DeliverResult:
    uid: int
    uidvalidity: int
    mailbox: str
    modseq: int
    # The delivery key had been recorded before this call (a redelivered record).
    duplicate: bool
    # This call made the message exist (False when an earlier attempt had completed it).
    created: bool
    # Mailboxes this call created (provisioning a new user on the first delivery).
    created_mailboxes: tuple[str, ...] = ()

    @property
    def mailbox_created(self) -> bool:
        return bool(self.created_mailboxes)


@dataclass(frozen=True, slots=True)
class FlagsResult:
    # Every requested message that exists and was not refused by UNCHANGEDSINCE, with its
    # current flags (IMAP STORE answers FETCH FLAGS for them, RFC 9051 section 6.4.6).
    messages: list[Message] = field(default_factory=list)
    # UIDs whose flags really changed (and got a new MODSEQ).
    changed: list[int] = field(default_factory=list)
    # UIDs left alone because their MODSEQ is above UNCHANGEDSINCE (RFC 7162 section 3.1.3).
    modified: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExpungeResult:
    uids: list[int] = field(default_factory=list)
    modseq: int = 0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    blob_id: str
    size: int


@dataclass(frozen=True, slots=True)
class MessageIndex:
    """What is derived from a message's content once, at delivery, and kept with its blob
    (content-addressed, so it never goes stale): FETCH and SEARCH never re-parse."""

    # Serialized store_pb2.MessageMeta with uid 0.
    meta: bytes
    # The search document (postmesh.store.search encoding).
    search: bytes
    # Days since 1970-01-01 of the Date header (SENTBEFORE/SENTON/SENTSINCE), None if none;
    # kept on each message too, so date searches need no search document.
    sent_day: int | None
    # (name, folded value) of the indexed header fields (``search.indexed_headers``), which
    # the backends store apart so their queries match them; None: derive from ``search``.
    headers: tuple[tuple[str, str], ...] | None = None
    # The content is its own POP3/SMTP wire form (``indexing.in_wire_form``); kept on each
    # message too, so reading content for POP3 needs no index lookup. None: not known (an
    # index stored before it was recorded, ADR 0042).
    wire_ready: bool | None = None


@dataclass(frozen=True, slots=True)
class StoredContent:
    """A message's content as read for sending: its chunks (at most BLOB_CHUNK_BYTES each)
    and whether it is in wire form (``MessageIndex.wire_ready``; None: not known)."""

    chunks: AsyncIterator[bytes]
    wire_ready: bool | None
    # read_messages: the backend read this message with others and the next one needs another
    # read (a trip to the database): what is held should be sent before it waits (ADR 0052).
    # None: the backend does not say.
    group_end: bool | None = None


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    mailboxes: list[Mailbox]
    created: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CreateResult:
    mailbox: Mailbox
    # Names this call created, parents first (the mailbox itself last).
    created: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    messages_deleted: int
    # Names that stopped existing: the mailbox (unless kept as a \Noselect parent) and
    # \Noselect parents left without children.
    removed: list[str] = field(default_factory=list)
    kept_as_noselect: bool = False


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int
    # Parallel lists, ascending source UID (COPYUID, RFC 4315 section 3).
    source_uids: list[int] = field(default_factory=list)
    dest_uids: list[int] = field(default_factory=list)
    modseq: int = 0
    # MOVE: the source UIDs expunged and the source mailbox's MODSEQ of that expunge.
    expunged: list[int] = field(default_factory=list)
    source_modseq: int = 0


@dataclass(frozen=True, slots=True)
class RenameResult:
    mailbox: Mailbox
    # (old, new) for the mailbox and each inferior, in order.
    renamed: list[tuple[str, str]] = field(default_factory=list)
    # Superior names created for the new name (RFC 9051 section 6.3.6).
    created: list[str] = field(default_factory=list)
    # Renaming INBOX: its messages moved to the new mailbox (RFC 9051 section 6.3.6).
    moved: CopyResult | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    uid: int
    uidvalidity: int
    modseq: int
    mailbox: str
    flags: tuple[str, ...] = ()  # as stored: canonical, de-duplicated, sorted
    # With a \Recent claim: the caller's recent UIDs are recent_first to uid (0: no claim).
    recent_first: int = 0


@dataclass(slots=True)
class FlagListing:
    """One page of what IMAP SELECT needs, as parallel columns (ascending UID): the flags of
    ``uids[i]`` are ``flag_sets[flag_index[i]]``. Distinct flag sets are few, so each is decoded
    and sent once."""

    uids: Sequence[int] = field(default_factory=list)
    modseqs: Sequence[int] = field(default_factory=list)
    flag_index: Sequence[int] = field(default_factory=list)
    flag_sets: list[tuple[str, ...]] = field(default_factory=list)
    more: bool = False


@dataclass(frozen=True, slots=True)
class Changes:
    changed: list[Message]
    expunged: list[int]
    highestmodseq: int
    uidvalidity: int
    # The janitor removed tombstones above ``since``: ``expunged`` may miss UIDs (leftovers.py).
    expunged_incomplete: bool = False
    # The first UID no IMAP session has claimed (\Recent, RFC 3501 section 2.3.2).
    first_recent_uid: int = 1


@dataclass(frozen=True, slots=True)
class SearchCandidate:
    """One message as a search sees it; ``search`` is None unless the criteria need content."""

    message: Message
    sent_day: int | None
    search: bytes | None


@dataclass(frozen=True, slots=True)
class SearchRows:
    """What a backend's search query returned (see ``search.plan``)."""

    # Matches its query decided alone: (uid, modseq).
    hits: list[tuple[int, int]]
    # Rows that passed the query and must still satisfy ``residual``.
    residual: store_pb2.SearchKey | None
    candidates: list[SearchCandidate]
    # Rows whose header values are not indexed (yet): evaluated against the whole criteria.
    unindexed: list[SearchCandidate]
    max_uid: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    uids: list[int]
    highest_modseq: int


@dataclass(frozen=True, slots=True)
class Quota:
    """RFC 9208 STORAGE (bytes here; IMAP reports KiB) and MESSAGE resources; limit 0 is
    unlimited."""

    storage_used: int
    storage_limit: int
    messages_used: int
    message_limit: int
