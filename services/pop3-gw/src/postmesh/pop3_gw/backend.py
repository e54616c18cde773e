"""What the POP3 session needs from the rest of Postmesh, as one small interface.

The real implementation (:mod:`postmesh.pop3_gw.grpc_backend`) calls the AuthService and the
StoreService; unit tests run its store half against the real store in-process, with a fake auth
service.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.scram import ScramParams, ScramVerdict
from postmesh.common.store_client.types import LockResult

__all__ = [
    "DELETED",
    "INBOX",
    "SEEN",
    "LockResult",
    "MailBackend",
    "Maildrop",
    "MessageGone",
    "MessageInfo",
]

INBOX = "INBOX"
DELETED = "\\Deleted"
SEEN = "\\Seen"


class MessageGone(Exception):
    """The message was expunged by another session (IMAP) after this maildrop was opened."""


@dataclass(frozen=True, slots=True)
class MessageInfo:
    uid: int
    # Octets as stored: the message with CRLF line ends (RFC 1939 §11 size).
    size: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Maildrop:
    """The user's INBOX when the session entered TRANSACTION, in ascending UID order."""

    uidvalidity: int
    messages: tuple[MessageInfo, ...]


class MailBackend(Protocol):
    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        """The canonical user name, or None when the credentials are wrong (with
        ``retry_after`` when the account or address is locked out)."""
        ...

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        """SCRAM-SHA-256 salt and iterations, or a lockout verdict."""
        ...

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        """The auth service's check of a SCRAM client proof."""
        ...

    async def open_maildrop(self, user: str) -> Maildrop: ...

    def fetch(self, user: str, uid: int, size_hint: int) -> AsyncGenerator[bytes, None]:
        """The raw message in chunks; raises MessageGone or BackendUnavailable while iterating."""
        ...

    def fetch_many(
        self, user: str, uids: Sequence[int], total_size: int
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        """Whole messages in the order of ``uids`` in one store call (about ``total_size``
        octets in all): (uid, content, wire_ready), or (uid, None, False) for one that was
        expunged. ``wire_ready``: the store recorded that every line of the content ends in
        CRLF and none begins with ".", so it is sent as it is (ADR 0042). Raises
        BackendUnavailable while iterating."""
        ...

    async def add_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None: ...

    async def remove_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None: ...

    async def expunge(self, user: str, uids: Sequence[int]) -> list[int]:
        """Remove those of ``uids`` that are flagged \\Deleted; returns the UIDs removed."""
        ...

    async def acquire_lock(self, user: str, session_id: str, lease_seconds: int) -> LockResult:
        """Lock the maildrop for this session (a lease that expires unless renewed)."""
        ...

    async def lock_and_open(
        self, user: str, session_id: str, lease_seconds: int
    ) -> tuple[LockResult, Maildrop | None]:
        """:meth:`acquire_lock` and, when granted, :meth:`open_maildrop` read under the lock
        (one store round trip where the store can, ADR 0057); the maildrop is None when the
        lock was not granted. On BackendUnavailable the lock may have been granted."""
        ...

    async def renew_lock(self, user: str, session_id: str, lease_seconds: int) -> bool:
        """False when the lock was lost (it expired and another session took it)."""
        ...

    async def release_lock(self, user: str, session_id: str) -> None: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
