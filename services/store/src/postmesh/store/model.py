"""Plain records the repository returns; independent of protobuf and of the backends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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
    # This call made the message exist (False when an earlier attempt had completed it);
    # the service publishes a MESSAGE_NEW event only then.
    created: bool
    mailbox_created: bool = False


@dataclass(frozen=True, slots=True)
class FlagsResult:
    # Every requested message that exists, with its current flags (IMAP STORE answers
    # FETCH FLAGS for all of them, RFC 9051 section 6.4.6).
    messages: list[Message] = field(default_factory=list)
    # UIDs whose flags really changed (and got a new MODSEQ).
    changed: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExpungeResult:
    uids: list[int] = field(default_factory=list)
    modseq: int = 0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    blob_id: str
    size: int
