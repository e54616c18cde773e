"""The one interface of the deferred queue and the maildrop locks, with shared validation.

Public methods validate, then call the backend's ``_``-prefixed method with canonical values
and the current time (Unix milliseconds from ``clock``, injectable so tests can move time).

Deferred queue: one entry per (queue id, recipient). An entry is *due* when its next attempt
time has come; it is *claimable* when due and not leased, or its lease expired. A claim leases it
to one owner; only that owner may reschedule (release with a later attempt) or delete it, until
its lease expired *and* another owner claimed it. Concurrent claimers never get the same entry.

Maildrop locks (RFC 1939 section 8): one holder per user at a time, as a lease the holder renews.
"""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from postmesh.store import validation as v
from postmesh.store.blobs import BlobSource
from postmesh.store.errors import InvalidArgument, NotFound
from postmesh.store.queue.model import LeaseNotHeld, LockState, NewEntry, QueueEntry, QueueStats

MAX_RECIPIENT_CHARS = 512  # RFC 5321 section 4.5.3.1.3: a path is at most 256 octets
MAX_OWNER_CHARS = 200
MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_ERROR_CHARS = 2000  # longer diagnostics are cut, not refused
MAX_CLAIM_ITEMS = 1000
MAX_QUEUE_LEASE_SECONDS = 86_400
MAX_LOCK_LEASE_SECONDS = 3600
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

Clock = Callable[[], float]


def _printable(value: str, what: str, limit: int) -> str:
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if len(value) > limit or any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidArgument(f"invalid {what} {value[:80]!r}")
    return value


def recipient(value: str) -> str:
    return _printable(value, "recipient", MAX_RECIPIENT_CHARS)


def owner(value: str) -> str:
    return _printable(value, "owner", MAX_OWNER_CHARS)


def _bounded(value: int, what: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{what} must be between {low} and {high}")
    return value


def page_token(token: str) -> tuple[str, str] | None:
    """The (queue id, recipient) a page ends with; tokens are JSON, opaque to callers."""
    if not token:
        return None
    try:
        q, r = json.loads(token)
    except (ValueError, TypeError):
        raise InvalidArgument("invalid page_token") from None
    if not isinstance(q, str) or not isinstance(r, str):
        raise InvalidArgument("invalid page_token")
    return q, r


def make_page_token(entry: QueueEntry) -> str:
    return json.dumps([entry.queue_id, entry.recipient])


class QueueRepository(ABC):
    # Backend exceptions meaning "unreachable or busy" (gRPC UNAVAILABLE).
    transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.time

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create tables / indexes (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    # -- deferred queue ----------------------------------------------------------------------

    async def enqueue(self, entry: NewEntry) -> tuple[QueueEntry, bool]:
        """Store the entry; idempotent per (queue id, recipient) while it exists: a repeat
        returns the stored entry unchanged and True (duplicate). With ``lease_owner`` a new
        entry is leased to it for ``lease_seconds`` from now, exactly as a claim would."""
        canonical, now = self._canonical(entry)
        return await self._enqueue(canonical, now)

    # True where enqueue_with_content can store the content in the entry's own transaction
    # (the queue's tables beside the store's blobs, on the store's connection).
    writes_content = False

    async def enqueue_with_content(
        self, entry: NewEntry, source: BlobSource | None, pin_until: int
    ) -> tuple[QueueEntry, bool]:
        """``enqueue``, with the content (``entry.blob_id`` is its address) stored and pinned
        until ``pin_until`` (Unix seconds) as ``StoreRepository.put_blob`` would, in the same
        transaction: both or neither, one commit. ``source`` None: the blob is stored already
        (InvalidArgument if not) and only its pin is extended. A repeat writes nothing. Only
        where ``writes_content``."""
        canonical, now = self._canonical(entry)
        if source is not None and canonical.blob_id != source.blob_id:
            raise InvalidArgument("blob_id is not the content's address")
        return await self._enqueue_with_content(canonical, now, source, pin_until)

    def _canonical(self, entry: NewEntry) -> tuple[NewEntry, int]:
        if entry.attempts < 0 or entry.next_attempt_at_ms < 0:
            raise InvalidArgument("attempts and next_attempt_at must not be negative")
        if not entry.envelope or len(entry.envelope) > MAX_ENVELOPE_BYTES:
            raise InvalidArgument("envelope is empty or too large")
        lease_owner, lease = "", 0
        if entry.lease_owner or entry.lease_seconds:
            lease_owner = owner(entry.lease_owner)
            lease = _bounded(entry.lease_seconds, "lease_seconds", 1, MAX_QUEUE_LEASE_SECONDS)
        now = self.now_ms()
        canonical = NewEntry(
            v.queue_id(entry.queue_id),
            recipient(entry.recipient),
            entry.envelope,
            v.blob_id(entry.blob_id),
            entry.attempts,
            entry.next_attempt_at_ms or now,
            entry.last_error[:MAX_ERROR_CHARS],
            lease_owner,
            lease,
        )
        return canonical, now

    async def get(self, queue_id: str, rcpt: str) -> QueueEntry | None:
        return await self._get(v.queue_id(queue_id), recipient(rcpt))

    async def claim_due(self, who: str, max_items: int, lease_seconds: int) -> list[QueueEntry]:
        """Lease up to ``max_items`` claimable entries to ``who``, oldest due first."""
        limit = _bounded(max_items, "max_items", 1, MAX_CLAIM_ITEMS)
        lease = _bounded(lease_seconds, "lease_seconds", 1, MAX_QUEUE_LEASE_SECONDS)
        return await self._claim_due(owner(who), limit, lease * 1000, self.now_ms())

    async def claim(self, queue_id: str, rcpt: str, who: str, lease_seconds: int) -> QueueEntry:
        """Lease this entry to ``who`` now, due or not (an operator's retry-now or delete).
        NotFound when there is none; LeaseNotHeld while another owner's lease is unexpired."""
        lease = _bounded(lease_seconds, "lease_seconds", 1, MAX_QUEUE_LEASE_SECONDS)
        return await self._claim(
            v.queue_id(queue_id), recipient(rcpt), owner(who), lease * 1000, self.now_ms()
        )

    async def reschedule(
        self,
        queue_id: str,
        rcpt: str,
        who: str,
        next_attempt_at_ms: int,
        last_error: str,
        delay_notified_at_ms: int = 0,
    ) -> QueueEntry:
        """Attempts + 1, next attempt time and last error; releases the lease. LeaseNotHeld
        unless ``who`` holds it; NotFound when there is no such entry. ``delay_notified_at_ms``
        non-zero: a delay notice was sent then, recorded unless one was recorded before (the
        first stays)."""
        if next_attempt_at_ms < 0 or delay_notified_at_ms < 0:
            raise InvalidArgument("next_attempt_at or delay_notified_at is negative")
        now = self.now_ms()
        return await self._reschedule(
            v.queue_id(queue_id), recipient(rcpt), owner(who),
            next_attempt_at_ms or now, last_error[:MAX_ERROR_CHARS], delay_notified_at_ms, now,
        )  # fmt: skip

    async def delete(self, queue_id: str, rcpt: str, who: str) -> None:
        """Remove the entry. LeaseNotHeld unless ``who`` holds it; NotFound if there is none."""
        await self._delete(v.queue_id(queue_id), recipient(rcpt), owner(who), self.now_ms())

    async def delete_many(
        self, items: Sequence[tuple[str, str, str]]
    ) -> list[NotFound | LeaseNotHeld | None]:
        """``delete`` of each (queue id, recipient, owner), in one transaction where the backend
        has them: per item None (deleted) or the NotFound / LeaseNotHeld that ``delete`` raises
        (that item unchanged). Invalid input refuses the whole call."""
        _bounded(len(items), "number of entries", 1, MAX_CLAIM_ITEMS)
        canonical = [(v.queue_id(q), recipient(r), owner(w)) for q, r, w in items]
        return await self._delete_many(canonical, self.now_ms())

    async def list_entries(
        self, queue_id: str, token: str, limit: int
    ) -> tuple[list[QueueEntry], str]:
        """A page of entries in (queue id, recipient) order and the next page's token ("" at
        the end). ``queue_id`` non-empty: that message's entries only."""
        size = _bounded(limit or DEFAULT_PAGE_SIZE, "page_size", 1, MAX_PAGE_SIZE)
        after = page_token(token)
        entries, more = await self._list(v.queue_id(queue_id) if queue_id else "", after, size)
        return entries, make_page_token(entries[-1]) if more and entries else ""

    async def stats(self) -> QueueStats:
        return await self._stats(self.now_ms())

    # -- maildrop locks ----------------------------------------------------------------------

    async def acquire_lock(self, user: str, who: str, lease_seconds: int) -> LockState:
        """Granted when nobody holds an unexpired lock (or ``who`` does: then renewed)."""
        lease = _bounded(lease_seconds, "lease_seconds", 1, MAX_LOCK_LEASE_SECONDS)
        return await self._acquire_lock(v.user(user), owner(who), lease * 1000, self.now_ms())

    async def renew_lock(self, user: str, who: str, lease_seconds: int) -> LockState:
        """Extend ``who``'s lock; not granted once another owner took it after expiry."""
        lease = _bounded(lease_seconds, "lease_seconds", 1, MAX_LOCK_LEASE_SECONDS)
        return await self._renew_lock(v.user(user), owner(who), lease * 1000, self.now_ms())

    async def release_lock(self, user: str, who: str) -> bool:
        """True when ``who`` held the lock (it is free now)."""
        return await self._release_lock(v.user(user), owner(who))

    # -- backend operations (canonical input, times in Unix ms) ------------------------------

    @abstractmethod
    async def _enqueue(self, entry: NewEntry, now: int) -> tuple[QueueEntry, bool]: ...

    async def _enqueue_with_content(
        self, entry: NewEntry, now: int, source: BlobSource | None, pin_until: int
    ) -> tuple[QueueEntry, bool]:
        raise NotImplementedError(f"{type(self).__name__} does not store content")

    @abstractmethod
    async def _get(self, queue_id: str, rcpt: str) -> QueueEntry | None: ...

    @abstractmethod
    async def _claim_due(
        self, who: str, limit: int, lease_ms: int, now: int
    ) -> list[QueueEntry]: ...

    @abstractmethod
    async def _claim(
        self, queue_id: str, rcpt: str, who: str, lease_ms: int, now: int
    ) -> QueueEntry: ...

    @abstractmethod
    async def _reschedule(
        self,
        queue_id: str,
        rcpt: str,
        who: str,
        next_at: int,
        last_error: str,
        notified_at: int,
        now: int,
    ) -> QueueEntry:
        """``notified_at`` 0: the entry's delay notice time is left as it is; otherwise it is
        set if the entry has none."""

    @abstractmethod
    async def _delete(self, queue_id: str, rcpt: str, who: str, now: int) -> None: ...

    async def _delete_many(
        self, items: list[tuple[str, str, str]], now: int
    ) -> list[NotFound | LeaseNotHeld | None]:
        """Without multi-document transactions: each entry's own ``_delete``, concurrently
        (distinct entries never contend; a repeated one finds itself gone)."""

        async def one(q: str, r: str, w: str) -> NotFound | LeaseNotHeld | None:
            try:
                await self._delete(q, r, w, now)
            except (NotFound, LeaseNotHeld) as e:
                return e
            return None

        return list(await asyncio.gather(*(one(*item) for item in items)))

    @abstractmethod
    async def _list(
        self, queue_id: str, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[QueueEntry], bool]: ...

    @abstractmethod
    async def _stats(self, now: int) -> QueueStats: ...

    @abstractmethod
    async def _acquire_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState: ...

    @abstractmethod
    async def _renew_lock(self, user: str, who: str, lease_ms: int, now: int) -> LockState: ...

    @abstractmethod
    async def _release_lock(self, user: str, who: str) -> bool: ...
