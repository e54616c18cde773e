"""What the IMAP session needs from the rest of the system, as small typed interfaces.

The real implementations call the store and auth gRPC services (:mod:`.grpc_backend`); unit tests
put in-memory fakes behind the same interfaces.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class MailboxNotFound(Exception):
    """The mailbox does not exist (IMAP ``NO [NONEXISTENT]``)."""


class MessageNotFound(Exception):
    """The message was expunged meanwhile (IMAP ``NO [EXPUNGEISSUED]``)."""


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


@dataclass(frozen=True)
class Changes:
    """CONDSTORE/QRESYNC (RFC 7162): what changed after a MODSEQ."""

    changed: Sequence[MessageMeta]
    expunged_uids: Sequence[int]
    highestmodseq: int


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

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        """The raw RFC 5322 message. Raises MessageNotFound."""
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


class Authenticator(Protocol):
    async def authenticate(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        """The canonical user name on success, None when the credentials are wrong."""
        ...
