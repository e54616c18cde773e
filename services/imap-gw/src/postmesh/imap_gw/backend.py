"""What the IMAP session needs from the rest of the system, as small typed interfaces.

The values and the store's answers (exceptions) are the typed store client's
(:mod:`postmesh.common.store_client`), re-exported here for the session; the real
implementation is that client (:mod:`.grpc_backend`), and unit tests run it against the real
store in-process (ADR 24).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Protocol

from postmesh.common.backend import SaslAuthClientLike
from postmesh.common.store_client.errors import (
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxRejected,
    MessageNotFound,
    OverQuota,
    SearchRejected,
    StoreRefused,
)
from postmesh.common.store_client.types import (
    Address,
    AppendResult,
    BodyPart,
    Changes,
    CopyResult,
    Envelope,
    FlagPage,
    FlagsMode,
    FlagsResult,
    MailboxInfo,
    MailboxTree,
    MessageMeta,
    MessagePage,
    MessageStructure,
    Quota,
    RecentClaim,
    SearchResult,
)
from postmesh.imap_gw.parser.search import SearchKey

__all__ = [
    "Address",
    "AppendResult",
    "Authenticator",
    "BodyPart",
    "Changes",
    "CopyResult",
    "Envelope",
    "FlagPage",
    "FlagsMode",
    "FlagsResult",
    "MailStore",
    "MailboxExists",
    "MailboxHasChildren",
    "MailboxInfo",
    "MailboxNotFound",
    "MailboxRejected",
    "MailboxTree",
    "MessageMeta",
    "MessageNotFound",
    "MessagePage",
    "MessageStructure",
    "OverQuota",
    "Quota",
    "RecentClaim",
    "SearchRejected",
    "SearchResult",
    "StoreRefused",
]


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

    def read_contents(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        """Whole messages in the order of ``uids``, in one store stream: (uid, content, in wire
        form), or (uid, None, False) for one the store no longer has."""
        ...

    async def get_structure(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> Sequence[MessageStructure]:
        """Envelope, body structure and header of each message; expunged UIDs are left out."""
        ...

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        """Messages whose MODSEQ is above ``since_modseq`` and UIDs expunged after it."""
        ...

    async def claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim | None:
        """IMAP4rev1 \\Recent (RFC 3501 §2.3.2): the calling session is the first told of the
        messages nobody claimed, up to ``up_to_uid`` (0: all now). None: the store cannot
        (nothing is recent then). Raises MailboxNotFound."""
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
        *,
        claim_recent: bool = False,
        normalize_line_ends: bool = False,
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


class Authenticator(SaslAuthClientLike, Protocol):
    """The auth service as LOGIN and AUTHENTICATE see it: password checks with lockout answers
    and SCRAM-SHA-256 (``postmesh.common.backend.SaslAuthClient``)."""
