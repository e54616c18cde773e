"""The one storage interface of the store, with the validation every backend shares.

Public methods validate and normalise input, then call the backend's ``_``-prefixed method
with canonical values; backends live in ``postmesh.store.sqlite`` and ``postmesh.store.mongodb``
and must pass the same contract suite (``postmesh.store.contract_suite``).

Model, shaped for IMAP4rev2 (RFC 9051), POP3 and local delivery:
- a user, known once provisioned (INBOX and the RFC 6154 special-use mailboxes), with a
  UIDVALIDITY counter and quota limits (RFC 9208);
- a mailbox per (user, name), "/" the hierarchy delimiter, with UIDVALIDITY (from the user's
  counter, so a recreated name gets a new, larger one), UIDNEXT and HIGHESTMODSEQ; counts are
  derived from the messages; a deleted parent of children stays as \\Noselect;
- a message per (mailbox, uid): UIDs strictly ascending (RFC 9051 section 2.3.1.1), a MODSEQ
  per change (RFC 7162 section 3.1), flags, internal date, size and the blob it shows;
  expunged UIDs stay as tombstones with their MODSEQ (QRESYNC);
- blobs addressed by sha256 and reference-counted, so one message for many users is stored
  once, each with its parsed MessageMeta and search document (FETCH and SEARCH never parse);
- a delivery record per (queue id, user, mailbox) that makes Deliver idempotent.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable

from postmesh.api.store.v1 import store_pb2
from postmesh.common.line_ends import BareLfNormalizer
from postmesh.common.lru import Lru
from postmesh.common.serial_thread import SerialThread
from postmesh.store import indexing
from postmesh.store import validation as v
from postmesh.store.blobs import BlobSource, BytesSource, spool
from postmesh.store.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from postmesh.store.hierarchy import is_inferior
from postmesh.store.model import (
    INBOX,
    AppendResult,
    BlobInfo,
    Changes,
    CopyResult,
    CreateResult,
    DeleteResult,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagListing,
    FlagsMode,
    FlagsResult,
    Mailbox,
    Message,
    MessageIndex,
    ProvisionResult,
    Quota,
    RecentClaim,
    RenameResult,
    SearchCandidate,
    SearchResult,
    SearchRows,
    StoredContent,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_UPLOAD_PIN_SECONDS = 7 * 24 * 3600
MAX_UIDS = 100_000  # per call; a gateway splits larger UID sets
# Content at hand up to this size is parsed (~1 ms for 100 KiB of text) instead of looking up
# the index an earlier recipient stored: the look-up is a miss for nearly every delivery (one
# recipient; the later recipients of one message find the first's parse in the process, ADR
# 0061), and a miss costs the parse anyway on top of the trip (on FerretDB/PostgreSQL ~1.2 ms
# of CPU over the store, FerretDB and PostgreSQL per 100 KiB message, ADR 0069).
PARSE_RATHER_THAN_LOOK_UP = 256 * 1024
# ... and for an APPEND up to this size (ADR 0056): an IMAP client appends content the store
# rarely has already (its own drafts and sent copies), unlike the many recipients of one
# delivery, so the look-up was nearly always a miss that cost a trip to the database thread
# (~0.15-0.2 ms of CPU at every APPEND of more than 16 KiB) before the parse anyway.
APPEND_PARSE_RATHER_THAN_LOOK_UP = 256 * 1024
# Indexes this process parsed lately, by blob id, up to this many octets of meta and search
# document (~2.5 KiB a 100 KiB message): the recipients of one message after the first take the
# parse of the first from here rather than from the database (ADR 0061). An index is a function
# of its content, which its blob id names, so a kept one is never stale.
RECENT_INDEX_BYTES = 1024 * 1024
# Content up to this size is parsed on the event loop (~0.06 ms for plain 4 KiB): handing it
# to a worker thread and back costs more CPU than that (~0.08 ms, measured). Bounded so that a
# crafted one (hundreds of MIME parts or header fields: ~2-2.5 ms at 8 KiB, 4-8 ms at 16 KiB)
# holds the loop no longer than a worker thread could hold the GIL anyway (the 5 ms switch
# interval). Larger content goes to a thread (ADR 0054).
PARSE_ON_LOOP = 8 * 1024


# Larger content is parsed on this one thread, in arrival order. Parsing holds the GIL, so more
# threads parse no faster together; with asyncio's default pool (up to 6 threads here) the
# concurrent Delivers of a busy MX parsed side by side, and the threads' hand-offs of the GIL
# cost the store more CPU per message than the parses spared (ADR 0061, measured at 20 x 100
# KiB). Trade-off: a large content delays the parses queued behind it until it is done.
_PARSER = SerialThread("parse")


async def _parse(raw: bytes) -> MessageIndex:
    if len(raw) <= PARSE_ON_LOOP:
        return indexing.index_content(raw)
    return await _PARSER.call(functools.partial(indexing.index_content, raw))


class _Sent:
    """An APPEND's content as the client sent it, counted (the declared size is of these
    octets), and with bare LFs made CRLF when asked (``normalize``)."""

    def __init__(self, stream: AsyncIterable[bytes], normalize: bool) -> None:
        self._stream = stream
        self._normalizer = BareLfNormalizer() if normalize else None
        self.octets = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._stream:
            self.octets += len(data)
            yield data if self._normalizer is None else self._normalizer.feed(data)


def _uids(values: Iterable[int]) -> list[int]:
    wanted = sorted(set(values))
    if not wanted:
        raise InvalidArgument("no uids given")
    # Every one is valid when the smallest and the largest are: two checks, not one call per
    # UID (a thousand per FETCH of headers).
    v.uid(wanted[0])
    v.uid(wanted[-1])
    if len(wanted) > MAX_UIDS:
        raise InvalidArgument(f"too many uids in one call (at most {MAX_UIDS})")
    return wanted


def _index_weight(index: MessageIndex) -> int:
    return len(index.meta) + len(index.search) + 256


class StoreRepository(ABC):
    # Backend exceptions that mean "the database is unreachable or busy": the gRPC layer
    # answers UNAVAILABLE for these, so callers retry (and the SMTP edge answers 451).
    transient_errors: tuple[type[BaseException], ...] = ()
    # Deliver: content at hand up to this size is parsed, not looked up (see _index_of).
    parse_rather_than_look_up = PARSE_RATHER_THAN_LOOK_UP

    def __init__(
        self,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        upload_pin_seconds: int = DEFAULT_UPLOAD_PIN_SECONDS,
        default_quota_bytes: int = 0,
        default_quota_messages: int = 0,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.upload_pin_seconds = upload_pin_seconds
        # Limits of a user without their own (SetQuota); 0 is unlimited.
        self.default_quota_bytes = default_quota_bytes
        self.default_quota_messages = default_quota_messages
        # Used on the event loop only.
        self._recent_indexes: Lru[str, MessageIndex] = Lru(RECENT_INDEX_BYTES, _index_weight)

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema / indexes (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """Readiness: is the backend reachable?"""

    # -- users and mailboxes -----------------------------------------------------------------

    async def provision_user(self, user: str, *, listing: bool = True) -> ProvisionResult:
        """Make the user known with INBOX and the special-use mailboxes, subscribed (RFC 6154).
        Idempotent: a later call creates none of them again, also after the user deleted or
        renamed one (only the first call of a user creates the defaults). Without ``listing``
        the result's mailboxes are empty (listing counts every message of the user)."""
        return await self._provision(v.user(user), listing)

    async def create_mailbox(self, user: str, name: str, special_use: str = "") -> CreateResult:
        """RFC 9051 section 6.3.4: missing superior names are created too."""
        return await self._create_mailbox(
            v.user(user), v.mailbox_name(name, allow_empty=False), v.special_use(special_use)
        )

    async def delete_mailbox(self, user: str, name: str) -> DeleteResult:
        """RFC 9051 section 6.3.5: the messages go (their blob references with them); a
        mailbox with inferiors stays as \\Noselect; INBOX and a \\Noselect mailbox with
        inferiors cannot be deleted."""
        canonical = v.mailbox_name(name, allow_empty=False)
        if canonical == INBOX:
            raise FailedPrecondition("INBOX cannot be deleted")
        return await self._delete_mailbox(v.user(user), canonical)

    async def rename_mailbox(self, user: str, name: str, new_name: str) -> RenameResult:
        """RFC 9051 section 6.3.6: inferiors move along; renaming INBOX moves its messages to
        a new mailbox and leaves INBOX (and its inferiors) in place, empty."""
        old = v.mailbox_name(name, allow_empty=False)
        new = v.mailbox_name(new_name, allow_empty=False)
        if new in (old, INBOX):
            raise AlreadyExists(f"mailbox {new!r} exists")
        if is_inferior(new, old):
            raise InvalidArgument(f"cannot rename {old!r} to its own inferior {new!r}")
        return await self._rename_mailbox(v.user(user), old, new)

    async def set_subscription(self, user: str, name: str, subscribed: bool) -> None:
        """RFC 9051 section 6.3.7: a subscription may name a mailbox that does not exist."""
        await self._set_subscription(
            v.user(user), v.mailbox_name(name, allow_empty=False), subscribed
        )

    async def list_mailboxes(self, user: str) -> list[Mailbox]:
        """Every mailbox of the user (\\Noselect parents too), by name."""
        return await self._list_mailboxes(v.user(user))

    async def list_subscriptions(self, user: str) -> list[str]:
        return await self._list_subscriptions(v.user(user))

    async def get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._get_mailbox(v.user(user), v.mailbox_name(name))

    # -- delivery and append -----------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> DeliverResult:
        """Idempotent per (queue id, user, mailbox); provisions a user never seen before."""
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
        index = await self._index_of(blob_id, source)
        canonical = Delivery(qid, user, mailbox, None, blob_id, flags, internal_date)
        return await self._deliver(canonical, source, index)

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Iterable[str],
        internal_date: int,
        size: int,
        stream: AsyncIterable[bytes],
        *,
        check_first: bool = True,
        claim_recent: bool = False,
        normalize_line_ends: bool = False,
    ) -> AppendResult:
        """IMAP APPEND; ``claim_recent``: the appending session claims \\Recent up to the new
        UID in the same write (RFC 3501 section 6.3.11: APPEND sets it; :meth:`claim_recent`);
        ``normalize_line_ends``: bare LFs are stored as CRLF (RFC 5322 section 2.1), ``size``
        being the octets sent. The declared size is checked against the quota before the content is
        read (unless not ``check_first``: the content is at hand, ADR 0051), and in the
        transaction that stores it. Not idempotent: a retried Append can make a second
        copy, as an IMAP client retrying APPEND after a lost response can (RFC 9051 section
        6.3.12 gives APPEND no key to detect it)."""
        user = v.user(user)
        mailbox = v.mailbox_name(mailbox)
        canonical_flags = v.flags(flags)
        if internal_date < 0:
            raise InvalidArgument("internal_date is negative")
        if size <= 0:
            raise InvalidArgument("declared size is 0")
        if size > self.max_message_bytes:
            raise InvalidArgument(
                f"message of {size} bytes exceeds the limit of {self.max_message_bytes} bytes"
            )
        if check_first:
            await self._check_append(user, mailbox, size)
        sent = _Sent(stream, normalize_line_ends)
        try:
            # Normalising at most doubles the content (every octet an LF).
            source = await spool(sent, 2 * size if normalize_line_ends else size)
        except InvalidArgument as e:
            raise InvalidArgument(f"declared size {size} does not match the content: {e}") from e
        try:
            if sent.octets != size:
                raise InvalidArgument(f"declared size {size} but {sent.octets} bytes were sent")
            if source.size > self.max_message_bytes:
                raise InvalidArgument(
                    f"message of {source.size} bytes with CRLF line ends exceeds the limit of"
                    f" {self.max_message_bytes} bytes"
                )
            if source.size <= APPEND_PARSE_RATHER_THAN_LOOK_UP:
                index: MessageIndex | None = await _parse(source.read_all())
            else:
                index = await self._index_of(source.blob_id, source)
            assert index is not None  # the content is at hand
            r = await self._append(
                user, mailbox, source, canonical_flags, internal_date or int(time.time()), index,
                claim_recent=claim_recent,
            )  # fmt: skip
            return dataclasses.replace(r, flags=canonical_flags)
        finally:
            source.close()

    async def put_blob(self, stream: AsyncIterable[bytes]) -> BlobInfo:
        """Store a blob no message references yet (claim check). It is pinned for
        ``upload_pin_seconds`` so a Deliver naming it later finds it."""
        source = await spool(stream, self.max_message_bytes)
        try:
            await self._put_blob(source)
        finally:
            source.close()
        return BlobInfo(source.blob_id, source.size)

    async def _index_of(self, blob_id: str, source: BlobSource | None) -> MessageIndex | None:
        """The parsed form of a content: parsed lately by this process, or stored with its
        blob by an earlier delivery (one message to many users is parsed once), else parsed
        now; None when the content is neither given nor stored (the backend then answers a
        redelivery, or refuses). Content at hand up to ``parse_rather_than_look_up`` is
        parsed rather than looked up: the look-up would nearly always miss."""
        kept = self._recent_indexes.get(blob_id)
        if kept is not None:
            return kept
        if source is None or source.size > self.parse_rather_than_look_up:
            stored = await self._get_index(blob_id)
            if stored is not None:
                return stored
        if source is None:
            try:
                chunks = await self._read_blob(blob_id)
                source = BytesSource(b"".join([c async for c in chunks]))
            except NotFound:
                return None
        index = await _parse(source.read_all())
        self._recent_indexes.put(blob_id, index)
        return index

    async def _heal_index(self, blob_id: str) -> MessageIndex:
        """Parse a stored message that has no index (stored before indexing existed)."""
        chunks = await self._read_blob(blob_id)
        raw = b"".join([c async for c in chunks])
        index = await _parse(raw)
        await self._put_index(blob_id, index)
        return index

    # -- messages ----------------------------------------------------------------------------

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Messages with uid > after_uid in ascending UID order; ``more`` when others follow."""
        if limit <= 0:
            raise InvalidArgument("limit must be positive")
        if after_uid < 0:
            raise InvalidArgument("after_uid is negative")
        return await self._list_messages(v.user(user), v.mailbox_name(mailbox), after_uid, limit)

    async def list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagListing:
        """UIDs, MODSEQs and flags of the messages with uid > after_uid, ascending, as columns
        (``flag_listing.py``); ``more`` when others follow."""
        if limit <= 0:
            raise InvalidArgument("limit must be positive")
        if after_uid < 0:
            raise InvalidArgument("after_uid is negative")
        return await self._list_flags(v.user(user), v.mailbox_name(mailbox), after_uid, limit)

    async def read_message(self, user: str, mailbox: str, uid: int) -> AsyncIterator[bytes]:
        """The message content in chunks of at most BLOB_CHUNK_BYTES. Raises NotFound before
        the first chunk for an unknown message."""
        found = await self._read_content(v.user(user), v.mailbox_name(mailbox), v.uid(uid))
        return found.chunks

    async def read_messages(
        self, user: str, mailbox: str, uids: Iterable[int]
    ) -> AsyncIterator[tuple[int, StoredContent | None]]:
        """(uid, its chunks as read_message gives them and whether it is in wire form) in the
        order of ``uids``, or (uid, None) for a message not found (nor its mailbox): several
        messages per backend read where the backend can (GetMessageContents)."""
        user, mailbox = v.user(user), v.mailbox_name(mailbox)
        async for item in self._read_messages(user, mailbox, [v.uid(u) for u in uids]):
            yield item

    async def _read_messages(
        self, user: str, mailbox: str, uids: list[int]
    ) -> AsyncIterator[tuple[int, StoredContent | None]]:
        """One read_message after the other; a backend overrides it to read several at once."""
        for uid in uids:
            try:
                yield uid, await self._read_content(user, mailbox, uid)
            except NotFound:
                yield uid, None

    async def get_meta(
        self, user: str, mailbox: str, uids: Iterable[int]
    ) -> list[tuple[int, bytes]]:
        """(uid, serialized MessageMeta with uid 0) of those of ``uids`` that exist, ascending."""
        rows = await self._get_meta(v.user(user), v.mailbox_name(mailbox), _uids(uids))
        out: list[tuple[int, bytes]] = []
        for uid, blob_id, meta in rows:
            if meta is None:
                meta = (await self._heal_index(blob_id)).meta
            out.append((uid, meta))
        return out

    async def search(self, user: str, mailbox: str, criteria: store_pb2.SearchKey) -> SearchResult:
        """IMAP SEARCH: matching UIDs ascending and their highest MODSEQ (RFC 7162 3.1.5).
        The backend answers what its query can (``search.plan``: flags, UIDs, dates, sizes,
        indexed header fields); the evaluator checks the rest on the rows it returns, loading
        search documents only for header/body/text keys left to it."""
        indexing.validate(criteria)
        rows = await self._search(v.user(user), v.mailbox_name(mailbox), criteria)
        found = list(rows.hits)
        if rows.residual is not None and rows.candidates:
            found += await self._evaluate(rows.residual, rows.candidates, rows.max_uid)
        if rows.unindexed:
            found += await self._evaluate(criteria, rows.unindexed, rows.max_uid)
        found.sort()
        return SearchResult([u for u, _ in found], max((m for _, m in found), default=0))

    async def _evaluate(
        self, key: store_pb2.SearchKey, candidates: list[SearchCandidate], max_uid: int
    ) -> list[tuple[int, int]]:
        """(uid, modseq) of the candidates that satisfy ``key``, by the Python evaluator."""
        content = indexing.needs_content(key)
        match = indexing.matcher(key, max_uid)
        out: list[tuple[int, int]] = []
        for cand in candidates:
            if content and cand.search is None:
                healed = await self._heal_index(cand.message.blob_id)
                cand = SearchCandidate(cand.message, healed.sent_day, healed.search)
            if match(cand):
                out.append((cand.message.uid, cand.message.modseq))
        return out

    async def store_flags(
        self,
        user: str,
        mailbox: str,
        uids: Iterable[int],
        mode: FlagsMode,
        flags: Iterable[str],
        unchanged_since: int = 0,
    ) -> FlagsResult:
        """``unchanged_since`` > 0: RFC 7162 section 3.1.3 UNCHANGEDSINCE."""
        if unchanged_since < 0:
            raise InvalidArgument("unchanged_since is negative")
        return await self._store_flags(
            v.user(user), v.mailbox_name(mailbox), _uids(uids), mode, v.flags(flags),
            unchanged_since,
        )  # fmt: skip

    async def expunge(
        self, user: str, mailbox: str, uids: Iterable[int] | None = None
    ) -> ExpungeResult:
        """Remove messages flagged \\Deleted (only those of ``uids`` if given and non-empty)."""
        only = _uids(uids) if uids else None
        return await self._expunge(v.user(user), v.mailbox_name(mailbox), only)

    async def copy_messages(
        self, user: str, mailbox: str, uids: Iterable[int], destination: str
    ) -> CopyResult:
        """IMAP COPY: flags and internal date kept, a new blob reference per copy (no new
        blob); all or nothing (RFC 9051 section 6.4.7)."""
        return await self._copy(
            v.user(user), v.mailbox_name(mailbox), _uids(uids),
            v.mailbox_name(destination, allow_empty=False), move=False,
        )  # fmt: skip

    async def move_messages(
        self, user: str, mailbox: str, uids: Iterable[int], destination: str
    ) -> CopyResult:
        """IMAP MOVE (RFC 6851): a copy, then an expunge of the sources (one new MODSEQ)."""
        return await self._copy(
            v.user(user), v.mailbox_name(mailbox), _uids(uids),
            v.mailbox_name(destination, allow_empty=False), move=True,
        )  # fmt: skip

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        """CONDSTORE/QRESYNC: live messages with MODSEQ > since (ascending UID) and the UIDs
        expunged after it."""
        if since_modseq < 0:
            raise InvalidArgument("since_modseq is negative")
        return await self._get_changes(v.user(user), v.mailbox_name(mailbox), since_modseq)

    async def claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim:
        """IMAP4rev1 \\Recent (RFC 3501 section 2.3.2): the caller is the first session told
        of the messages not claimed yet, up to ``up_to_uid`` (0: up to the highest UID now),
        atomically: no two callers get one message. NotFound if the mailbox does not exist."""
        if up_to_uid < 0:
            raise InvalidArgument("up_to_uid is negative")
        return await self._claim_recent(v.user(user), v.mailbox_name(mailbox), up_to_uid)

    # -- blobs and quotas --------------------------------------------------------------------

    async def read_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        """A stored blob's content in chunks (a pending upload too); NotFound if not stored."""
        return await self._read_blob(v.blob_id(blob_id))

    async def blob_refcount(self, blob_id: str) -> int | None:
        """How many messages reference the blob; None when the blob is not stored."""
        return await self._blob_refcount(v.blob_id(blob_id))

    async def get_quota(self, user: str) -> Quota:
        return await self._get_quota(v.user(user))

    async def set_quota(self, user: str, storage_bytes: int, messages: int) -> Quota:
        """Set the user's own limits (0 = unlimited), replacing the service default."""
        if storage_bytes < 0 or messages < 0:
            raise InvalidArgument("quota limits are negative")
        return await self._set_quota(v.user(user), storage_bytes, messages)

    # -- backend operations (canonical input) ------------------------------------------------

    @abstractmethod
    async def _provision(self, user: str, listing: bool) -> ProvisionResult: ...

    @abstractmethod
    async def _create_mailbox(self, user: str, name: str, special_use: str) -> CreateResult: ...

    @abstractmethod
    async def _delete_mailbox(self, user: str, name: str) -> DeleteResult: ...

    @abstractmethod
    async def _rename_mailbox(self, user: str, old: str, new: str) -> RenameResult: ...

    @abstractmethod
    async def _set_subscription(self, user: str, name: str, subscribed: bool) -> None: ...

    @abstractmethod
    async def _list_mailboxes(self, user: str) -> list[Mailbox]: ...

    @abstractmethod
    async def _list_subscriptions(self, user: str) -> list[str]: ...

    @abstractmethod
    async def _get_mailbox(self, user: str, name: str) -> Mailbox: ...

    @abstractmethod
    async def _deliver(
        self, delivery: Delivery, source: BlobSource | None, index: MessageIndex | None
    ) -> DeliverResult:
        """``delivery.blob_id`` is always set; ``source`` is the content when the caller sent
        it inline (the blob may then have to be written), None for a blob stored earlier.
        ``index`` is None only when the blob was not stored a moment ago: a redelivery is
        answered as such, anything else is refused (unknown blob_id)."""

    @abstractmethod
    async def _check_append(self, user: str, mailbox: str, size: int) -> None:
        """Known user, selectable mailbox, room for ``size`` bytes and one message."""

    @abstractmethod
    async def _append(
        self,
        user: str,
        mailbox: str,
        source: BlobSource,
        flags: tuple[str, ...],
        internal_date: int,
        index: MessageIndex,
        *,
        claim_recent: bool = False,
    ) -> AppendResult: ...

    @abstractmethod
    async def _put_blob(self, source: BlobSource) -> None: ...

    @abstractmethod
    async def _get_index(self, blob_id: str) -> MessageIndex | None: ...

    @abstractmethod
    async def _put_index(self, blob_id: str, index: MessageIndex) -> None: ...

    @abstractmethod
    async def _list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> tuple[list[Message], bool]: ...

    @abstractmethod
    async def _list_flags(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> FlagListing: ...

    @abstractmethod
    async def _read_content(self, user: str, mailbox: str, uid: int) -> StoredContent:
        """The message's chunks and wire-form bit. Raises NotFound before the first chunk."""

    @abstractmethod
    async def _get_meta(
        self, user: str, mailbox: str, uids: list[int]
    ) -> list[tuple[int, str, bytes | None]]:
        """(uid, blob_id, meta or None when not indexed) for the existing ``uids``."""

    @abstractmethod
    async def _search(self, user: str, mailbox: str, criteria: store_pb2.SearchKey) -> SearchRows:
        """Run ``search.plan(criteria, highest UID, <backend limits>)``: the pushed conditions
        in the backend's query, returning rows for the residual (with search documents when
        it needs them; None for a message not indexed) and the rows whose header fields are
        not indexed (with their search documents)."""

    @abstractmethod
    async def _store_flags(
        self,
        user: str,
        mailbox: str,
        uids: list[int],
        mode: FlagsMode,
        flags: tuple[str, ...],
        unchanged_since: int,
    ) -> FlagsResult: ...

    @abstractmethod
    async def _expunge(self, user: str, mailbox: str, uids: list[int] | None) -> ExpungeResult: ...

    @abstractmethod
    async def _copy(
        self, user: str, mailbox: str, uids: list[int], destination: str, *, move: bool
    ) -> CopyResult: ...

    @abstractmethod
    async def _get_changes(self, user: str, mailbox: str, since: int) -> Changes: ...

    @abstractmethod
    async def _claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim: ...

    @abstractmethod
    async def _read_blob(self, blob_id: str) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _blob_refcount(self, blob_id: str) -> int | None: ...

    @abstractmethod
    async def _get_quota(self, user: str) -> Quota: ...

    @abstractmethod
    async def _set_quota(self, user: str, storage_bytes: int, messages: int) -> Quota: ...
