"""Records of the queue and lock repositories; independent of protobuf and of the backends."""

from __future__ import annotations

from dataclasses import dataclass

from postmesh.store.errors import StoreError


class LeaseNotHeld(StoreError):
    """The caller does not hold the entry's lease (FAILED_PRECONDITION): it expired and another
    owner took it, or the entry was rescheduled or deleted already."""


@dataclass(frozen=True, slots=True)
class NewEntry:
    queue_id: str
    recipient: str
    # The serialized InboundMessage (content as blob_id, only this recipient); opaque here.
    envelope: bytes
    blob_id: str
    attempts: int = 0
    # Unix milliseconds; 0 means now.
    next_attempt_at_ms: int = 0
    last_error: str = ""
    # Born leased to this owner for lease_seconds (its first attempt needs no claim).
    lease_owner: str = ""
    lease_seconds: int = 0


@dataclass(frozen=True, slots=True)
class QueueEntry:
    queue_id: str
    recipient: str
    envelope: bytes
    blob_id: str
    attempts: int
    next_attempt_at_ms: int
    last_error: str
    # The owner of the last claim while it holds it ("" when released); the lease may have
    # expired (lease_expires_at_ms in the past) without anyone having taken it over yet.
    lease_owner: str
    lease_expires_at_ms: int
    created_at_ms: int
    # When the sender was sent a delay notice about this recipient (Unix ms); 0: not yet.
    delay_notified_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    entries: int
    due: int
    leased: int
    oldest_created_at_ms: int


@dataclass(frozen=True, slots=True)
class LockState:
    granted: bool
    # Granted: the caller. Not granted: the holder ("" when nobody holds it).
    holder: str
    expires_at_ms: int
