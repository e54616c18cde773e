"""The one storage interface of the store, with the validation every backend shares.

Public methods validate and normalise input, then call the backend's ``_``-prefixed method
with canonical values; backends live in ``postmesh.store.sqlite`` and ``postmesh.store.mongodb``
and must pass the same contract suite (``postmesh.store.contract_suite``).

Model, shaped for the IMAP4rev2 store that grows from it:
- a mailbox per (user, name) with UIDVALIDITY (set once at creation), UIDNEXT and
  HIGHESTMODSEQ counters; message counts are derived from the messages;
- a message per (mailbox, uid): UIDs strictly ascending (RFC 9051 section 2.3.1.1), a MODSEQ
  per change (RFC 7162 section 3.1), flags, internal date, size and the blob it shows;
- blobs addressed by sha256 and reference-counted, so one message for many users is stored once;
- a delivery record per (queue id, user, mailbox) that makes Deliver idempotent.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from postmesh.store import validation as v
from postmesh.store.blobs import BlobSource, BytesSource, spool
from postmesh.store.errors import InvalidArgument
from postmesh.store.model import (
    BlobInfo,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagsMode,
    FlagsResult,
    Mailbox,
    Message,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_UPLOAD_PIN_SECONDS = 7 * 24 * 3600


class StoreRepository(ABC):
    # Backend exceptions that mean "the database is unreachable or busy": the gRPC layer
    # answers UNAVAILABLE for these, so callers retry (and the SMTP edge answers 451).
    transient_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        upload_pin_seconds: int = DEFAULT_UPLOAD_PIN_SECONDS,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.upload_pin_seconds = upload_pin_seconds

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema / indexes (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """Readiness: is the backend reachable?"""

    # -- public operations (validate, then delegate) ----------------------------------------

    async def deliver(self, delivery: Delivery) -> DeliverResult:
        qid = v.queue_id(delivery.queue_id)
        user = v.user(delivery.user)
        mailbox = v.mailbox_name(delivery.mailbox)
        flags = v.flags(delivery.flags)
        if delivery.internal_date < 0:
            raise InvalidArgument("internal_date is negative")
        internal_date = delivery.internal_date or int(time.time())
        if (delivery.content is None) == (delivery.blob_id is None):
            raise InvalidArgument("exactly one of content and blob_id is required")
        source: BlobSource | None = None
        blob_id: str
        if delivery.content is not None:
            if not delivery.content:
                raise InvalidArgument("content is empty")
            if len(delivery.content) > self.max_message_bytes:
                raise InvalidArgument(
                    f"content exceeds the limit of {self.max_message_bytes} bytes"
                )
            source = BytesSource(delivery.content)
            blob_id = source.blob_id
        else:
            assert delivery.blob_id is not None
            blob_id = v.blob_id(delivery.blob_id)
        canonical = Delivery(qid, user, mailbox, None, blob_id, flags, internal_date)
        return await self._deliver(canonical, source)

    async def put_blob(self, stream: AsyncIterable[bytes]) -> BlobInfo:
        """Store a blob no message references yet (claim check). It is pinned for
        ``upload_pin_seconds`` so a Deliver naming it later finds it."""
        source = await spool(stream, self.max_message_bytes)
        try:
            await self._put_blob(source)
        finally:
            source.close()
        return BlobInfo(source.blob_id, source.size)

    async def create_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._create_mailbox(v.user(user), v.mailbox_name(name))

    async def list_mailboxes(self, user: str) -> list[Mailbox]:
        return await self._list_mailboxes(v.user(user))

    async def get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._get_mailbox(v.user(user), v.mailbox_name(name))

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Messages with uid > after_uid in ascending UID order; ``more`` when others follow."""
        if limit <= 0:
            raise InvalidArgument("limit must be positive")
        if after_uid < 0:
            raise InvalidArgument("after_uid is negative")
        return await self._list_messages(v.user(user), v.mailbox_name(mailbox), after_uid, limit)

    async def read_message(self, user: str, mailbox: str, uid: int) -> AsyncIterator[bytes]:
        """The message content in chunks of at most BLOB_CHUNK_BYTES. Raises NotFound before
        the first chunk for an unknown message."""
        return await self._read_message(v.user(user), v.mailbox_name(mailbox), v.uid(uid))

    async def store_flags(
        self, user: str, mailbox: str, uids: Iterable[int], mode: FlagsMode, flags: Iterable[str]
    ) -> FlagsResult:
        wanted = sorted({v.uid(u) for u in uids})
        if not wanted:
            raise InvalidArgument("no uids given")
        return await self._store_flags(
            v.user(user), v.mailbox_name(mailbox), wanted, mode, v.flags(flags)
        )

    async def expunge(
        self, user: str, mailbox: str, uids: Iterable[int] | None = None
    ) -> ExpungeResult:
        """Remove messages flagged \\Deleted (only those of ``uids`` if given and non-empty)."""
        only = sorted({v.uid(u) for u in uids}) if uids else None
        return await self._expunge(v.user(user), v.mailbox_name(mailbox), only)

    async def read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        """A stored blob's content in chunks (a pending upload too); NotFound if not stored."""
        return await self._read_blob(v.blob_id(blob_id))

    async def blob_refcount(self, blob_id: str) -> int | None:
        """How many messages reference the blob; None when the blob is not stored."""
        return await self._blob_refcount(v.blob_id(blob_id))

    # -- backend operations (canonical input) ------------------------------------------------

    @abstractmethod
    async def _deliver(self, delivery: Delivery, source: BlobSource | None) -> DeliverResult:
        """``delivery.blob_id`` is always set; ``source`` is the content when the caller sent
        it inline (the blob may then have to be written), None for a blob stored earlier."""

    @abstractmethod
    async def _put_blob(self, source: BlobSource) -> None: ...

    @abstractmethod
    async def _create_mailbox(self, user: str, name: str) -> Mailbox: ...

    @abstractmethod
    async def _list_mailboxes(self, user: str) -> list[Mailbox]: ...

    @abstractmethod
    async def _get_mailbox(self, user: str, name: str) -> Mailbox: ...

    @abstractmethod
    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]: ...

    @abstractmethod
    async def _read_message(self, user: str, mailbox: str, uid: int) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _store_flags(
        self, user: str, mailbox: str, uids: list[int], mode: FlagsMode, flags: tuple[str, ...]
    ) -> FlagsResult: ...

    @abstractmethod
    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult: ...

    @abstractmethod
    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _blob_refcount(self, blob_id: str) -> int | None: ...


def new_uidvalidity() -> int:
    """RFC 9051 section 2.3.1.1: UIDVALIDITY must never repeat for a (re)created name; seconds
    since the epoch do that as long as one name is not recreated twice in one second (the
    mailbox-management issue adds a per-user counter for that case)."""
    return max(1, int(time.time()) & 0xFFFFFFFF)
