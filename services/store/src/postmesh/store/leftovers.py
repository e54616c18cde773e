"""What a storage backend leaves behind, and the calls the janitor (``janitor.py``) removes it
with.

Every call removes at most ``limit`` items and returns how many it removed, so a janitor pass is
bounded in work and in how long it holds anything; a call that returns ``limit`` has more to do.
Every call is idempotent and safe to run from several store replicas at once and next to live
writers: a crash anywhere leaves only what the next call (of any replica) removes. Times are
explicit (Unix seconds) so tests can age data without sleeping.

Kinds (the ``kind`` label of ``postmesh_store_janitor_removed_total``):

- ``upload_pins``: PutBlob pins past their expiry (the blob stays while a message uses it);
- ``blobs``: blobs no message references and no live pin holds (content, chunks, index);
- ``tombstones``: expunge tombstones older than the retention. A mailbox records the highest
  MODSEQ of the tombstones removed (its *vanished floor*); GetChanges since a MODSEQ below it
  says ``expunged_incomplete`` and the IMAP gateway then resynchronises by UID list, which RFC
  7162 section 3.2.5.2 allows (VANISHED (EARLIER) may name UIDs the client never had);
- ``deliveries``: Deliver idempotency records older than the retention (a record must outlive
  every redelivery of its queue id: Kafka retention and the deferred queue's lifetime);
- MongoDB only, leftovers of writers that died (ADR 7): ``intents`` (expired ones, rolled
  forward by the same code as a user's next operation), ``references`` (blob references of an
  Append that died before its message existed, of a Deliver never retried), ``chunks`` (of a
  blob incarnation whose deleter died), ``transitions`` (deferred-queue transitions of an entry
  deleted under a claimer that died), ``reservations`` (quota reservations and quota leases
  past their life, ADR 36: they no longer count, this only removes the documents);
- SQLite only: ``pages`` returned to the file system by an incremental vacuum, and
  ``unindexed``: contents stored before indexing existed, parsed and indexed a batch per call
  (as a read of one would); once none is left the file's ``unindexed_messages`` fact goes, and
  header SEARCH stops looking for such contents (ADR 65, ADR 70).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

UPLOAD_PINS = "upload_pins"
BLOBS = "blobs"
TOMBSTONES = "tombstones"
DELIVERIES = "deliveries"
INTENTS = "intents"
REFERENCES = "references"
CHUNKS = "chunks"
TRANSITIONS = "transitions"
RESERVATIONS = "reservations"
PAGES = "pages"
UNINDEXED = "unindexed"


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Everything older than these (Unix seconds) may go."""

    now: float
    # Tombstones expunged before this.
    tombstones: float
    # Delivery records created before this.
    deliveries: float
    # Half-written leftovers (a reference without its message, a blob being written, a queue
    # transition without its entry) untouched since this: their writer is surely dead.
    orphans: float


class Leftovers(ABC):
    """Implemented by a store backend (and the MongoDB queue) for the janitor."""

    @abstractmethod
    async def collect(self, kind: str, cutoffs: Cutoffs, limit: int) -> int:
        """Remove up to ``limit`` leftovers of ``kind`` (one of :attr:`kinds`)."""

    @property
    @abstractmethod
    def kinds(self) -> tuple[str, ...]:
        """The kinds this backend has, in the order a pass collects them (what frees blobs
        first, blobs after)."""

    @abstractmethod
    async def census(self) -> dict[str, int]:
        """How many of each stored thing there are (for tests and operators); a store backend
        counts at least ``blobs``, ``chunks``, ``messages`` (live), ``tombstones`` and
        ``deliveries``."""
