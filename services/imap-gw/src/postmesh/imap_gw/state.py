"""Session state (RFC 9051 §3) and the selected mailbox as this session's client knows it.

:class:`SelectedMailbox` is the model James calls SelectedMailbox and pymap the selected state:
the seq <-> UID map the client has been told, each message's flags and MODSEQ as last reported,
and the changes learnt from the store that the client has not been told yet (new UIDs, expunged
UIDs, flag changes). It does no I/O: ``commands/sync.py`` feeds it from the store and turns its
pending updates into untagged responses where the RFCs allow them.
"""

from __future__ import annotations

import bisect
import enum
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postmesh.imap_gw.backend import Changes, FlagPage, MessageMeta
from postmesh.imap_gw.line_cache import LineCache


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# IMAP4rev1's session flag (RFC 3501 §2.3.2): this session is the first told of the message.
RECENT = "\\Recent"

Flags = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """One unsolicited ``* seq FETCH (FLAGS ...)`` to send."""

    seq: int
    uid: int
    flags: Flags
    modseq: int


class SelectedMailbox:
    """What this session has told the client: message N is ``uids[N-1]``.

    The map changes only when the client is told (EXISTS / EXPUNGE / VANISHED), never behind its
    back (RFC 9051 §7.5.1: sequence numbers stay stable between such responses). A message
    expunged in the store stays in the map, with its last flags, until an EXPUNGE is allowed.

    Compact on purpose (an idle session must stay small): UIDs and MODSEQs in typed arrays
    parallel to the sequence numbers, flag tuples interned per mailbox (most messages share a
    handful of flag sets).
    """

    __slots__ = (
        "__weakref__",  # the saved search result ($) refers to the mailbox it was saved in
        "_expunged",
        "_flag_changes",
        "_flags",
        "_intern",
        "_keywords",
        "_modseqs",
        "_new",
        "_recent",
        "claimed_recent",
        "claims_recent",
        "dirty",
        "flags_announced",
        "highestmodseq",
        "lines",
        "name",
        "qresync",
        "readonly",
        "recent_told",
        "search_memo",
        "uidnext",
        "uids",
        "uidvalidity",
        "version",
        "watches_recent",
    )

    def __init__(
        self,
        name: str,
        uidvalidity: int,
        *,
        readonly: bool,
        uidnext: int = 1,
        highestmodseq: int = 0,
    ) -> None:
        self.name = name
        self.uidvalidity = uidvalidity
        self.readonly = readonly
        self.uidnext = uidnext
        # The store's HIGHESTMODSEQ as of the last resynchronisation: the next GetChanges asks
        # for what came after it. Only the store's own answer advances it (never a MODSEQ seen
        # in this session's STORE), so a change committed by another writer is never skipped.
        self.highestmodseq = highestmodseq
        self.uids: array[int] = array("I")
        self._modseqs: array[int] = array("Q")
        self._flags: list[Flags] = []
        self._intern: dict[Flags, Flags] = {}
        self._keywords: dict[str, None] = {}
        # Pending updates, not yet told to the client.
        self._new: dict[int, tuple[Flags, int]] = {}
        self._expunged: set[int] = set()
        self._flag_changes: set[int] = set()
        # A keyword appeared that the last FLAGS response did not list (RFC 9051 §7.3.5).
        self.flags_announced = True
        # An event said this mailbox changed: resynchronise from the store before the next
        # response that may carry updates.
        self.dirty = False
        # QRESYNC enabled when selected: expunges are reported as VANISHED (RFC 7162 §3.2.10).
        self.qresync = False
        # IMAP4rev1 \Recent (RFC 3501 §2.3.2): the UID ranges recent in this session, kept in
        # its flag tuples as RECENT; whether it claims new messages as it learns of them (a
        # read-write IMAP4rev1 session) or only shows those nobody claimed (EXAMINE), the
        # highest UID it claimed or looked at, and the RECENT count last told.
        self._recent: list[tuple[int, int]] = []
        self.claims_recent = False
        self.watches_recent = False
        self.claimed_recent = 0
        self.recent_told = 0
        # FETCH lines rendered from this model (``line_cache.py``): every change of a message's
        # seq, UID, flags or MODSEQ below tells it.
        self.lines = LineCache()
        # Moves on with every change of what a search of the model can see (messages, their
        # flags, expunges and new messages pending), so an answer computed at one version is
        # the answer at that version: ``search_memo`` keeps the last one (commands/search.py).
        self.version = 0
        self.search_memo: tuple[object, bytes] | None = None

    def drop_rendered(self) -> None:
        """Forget the rendered FETCH lines and the last SEARCH answer: the session will not poll
        soon (IDLE), and an idle session must stay small whatever its mailbox's size."""
        self.lines.clear()
        self.search_memo = None

    # -- the client's view ----------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def flags_of(self, uid: int) -> Flags:
        seq = self.seq_of(uid)
        return self._flags[seq - 1] if seq is not None else ()

    def columns(self, uids: Sequence[int]) -> tuple[Sequence[int], Sequence[Flags], Sequence[int]]:
        """Sequence numbers, flags and MODSEQs of ``uids`` (ascending, every one in the map),
        as the model holds them: slices when they are a run of consecutive messages (1:*)."""
        n = len(uids)
        lo = bisect.bisect_left(self.uids, uids[0]) if n else 0
        if self.uids[lo : lo + n].tolist() == list(uids):
            return range(lo + 1, lo + n + 1), self._flags[lo : lo + n], self._modseqs[lo : lo + n]
        at = [bisect.bisect_left(self.uids, u) for u in uids]
        return [i + 1 for i in at], [self._flags[i] for i in at], [self._modseqs[i] for i in at]

    def slice(self, i: int, j: int) -> tuple[Sequence[int], Sequence[Flags], Sequence[int]]:
        """UIDs, flags and MODSEQs of messages ``i`` to ``j - 1`` (0-based)."""
        return self.uids[i:j], self._flags[i:j], self._modseqs[i:j]

    def present(self, uids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Those of ``uids`` (ascending) that are in the map, and their sequence numbers: one
        pass with a moving lower bound, not a search of the whole map per UID."""
        arr, n, lo = self.uids, len(self.uids), 0
        kept: list[int] = []
        seqs: list[int] = []
        for u in uids:
            lo = bisect.bisect_left(arr, u, lo)
            if lo == n:
                break
            if arr[lo] == u:
                kept.append(u)
                seqs.append(lo + 1)
        return kept, seqs

    @property
    def flag_column(self) -> Sequence[Flags]:
        """Every message's flags, in sequence-number order (read-only)."""
        return self._flags

    def unreported_expunges(self) -> Iterable[int]:
        """UIDs expunged in the store that the client has not been told of yet."""
        return self._expunged

    def store_highest_uid(self) -> int:
        """The highest UID the store holds, as far as the model knows: the newest message not
        yet announced, else the highest in the map that is not expunged (0: none). After a
        resynchronisation this is the store's own answer (what ``*`` means in a UID set)."""
        if self._new:
            return max(self._new)
        for i in range(len(self.uids) - 1, -1, -1):
            if self.uids[i] not in self._expunged:
                return self.uids[i]
        return 0

    def modseq_of(self, uid: int) -> int:
        seq = self.seq_of(uid)
        return self._modseqs[seq - 1] if seq is not None else 0

    def knows_flags(self, uids: Iterable[int], flags: Iterable[str], modseq: int) -> bool:
        """Whether the model holds exactly ``flags`` for each of ``uids``, at ``modseq`` or
        later: then a change saying so has nothing to tell this session."""
        wanted = set(flags)
        for uid in uids:
            seq = self.seq_of(uid)
            if seq is None or uid in self._expunged or self._modseqs[seq - 1] < modseq:
                return False
            if set(self._flags[seq - 1]) - {RECENT} != wanted - {RECENT}:
                return False
        return True

    def knows_message(self, uids: Iterable[int], modseq: int) -> bool:
        """Whether the model holds each of ``uids`` (announced or pending) at ``modseq`` or
        later: then a MESSAGE_NEW event for them has nothing to tell this session (its own
        APPEND, recorded by :meth:`appended`)."""
        for uid in uids:
            pending = self._new.get(uid)
            if pending is not None:
                if pending[1] < modseq:
                    return False
                continue
            seq = self.seq_of(uid)
            if seq is None or self._modseqs[seq - 1] < modseq:
                return False
        return True

    def is_expunged(self, uid: int) -> bool:
        """Expunged in the store but still in the client's map (not yet reported)."""
        return uid in self._expunged

    def keywords(self) -> list[str]:
        return list(self._keywords)

    # -- \Recent (IMAP4rev1, RFC 3501 §2.3.2) ----------------------------------------------------
    def is_recent(self, uid: int) -> bool:
        return any(lo <= uid <= hi for lo, hi in self._recent)

    def claimed(self, first: int, last: int) -> None:
        """This session claimed the UIDs ``first`` to ``last`` (the store's ClaimRecent), or,
        read-only, saw that nobody had claimed them. Those the client has already been told of
        stay as told: only messages not announced yet become recent, before the EXISTS that
        announces them; and none twice (a read-only session may see the same unclaimed
        messages at two resynchronisations before its EXISTS)."""
        lo = max(first, self.claimed_recent + 1, self.uids[-1] + 1 if self.uids else 1)
        self.claimed_recent = max(self.claimed_recent, last)
        if lo > last:
            return
        self._recent.append((lo, last))
        for uid, (flags, modseq) in list(self._new.items()):
            if lo <= uid <= last:
                self._new[uid] = (self.shown_flags(uid, flags), modseq)

    def recent_count(self) -> int:
        """Messages in the client's map that are recent in this session (``* n RECENT``)."""
        n = 0
        for lo, hi in self._recent:
            n += bisect.bisect_right(self.uids, hi) - bisect.bisect_left(self.uids, lo)
        return n

    def recent_positions(self) -> list[tuple[int, int]]:
        """0-based runs of map positions of the recent messages (SEARCH RECENT)."""
        spans = []
        for lo, hi in sorted(self._recent):
            i, j = bisect.bisect_left(self.uids, lo), bisect.bisect_right(self.uids, hi)
            if i < j:
                spans.append((i, j - 1))
        return spans

    def shown_flags(self, uid: int, flags: Iterable[str]) -> Flags:
        """The store's flags of ``uid`` as this session shows them: with RECENT if it is recent
        here (the store never holds \\Recent)."""
        if not self._recent:
            return self._flags_tuple(flags)
        t = tuple(f for f in flags if f != RECENT)
        if self.is_recent(uid):
            t = (*t, RECENT)
        return self._flags_tuple(t)

    def first_unseen(self) -> int | None:
        return next(
            (i + 1 for i, f in enumerate(self._flags) if "\\Seen" not in f),
            None,
        )

    # -- loading and recording what the client was told ------------------------------------------
    def _flags_tuple(self, flags: Iterable[str]) -> Flags:
        t = tuple(flags)
        interned = self._intern.get(t)
        if interned is not None:
            return interned
        # Bounded: a mailbox with ever more distinct flag sets stops sharing, not growing.
        if len(self._intern) < 256:
            self._intern[t] = t
        for f in t:
            if not f.startswith("\\") and f not in self._keywords:
                self._keywords[f] = None
                self.flags_announced = False
        return t

    def append(self, messages: Iterable[MessageMeta]) -> None:
        """Messages the client is being told about (SELECT, or the EXISTS being sent)."""
        self.lines.changed(len(self.uids))
        self.version += 1
        for m in messages:
            if self.uids and m.uid <= self.uids[-1]:
                continue
            self.uids.append(m.uid)
            self._modseqs.append(m.modseq)
            self._flags.append(self.shown_flags(m.uid, m.flags))
            self.uidnext = max(self.uidnext, m.uid + 1)
        self.flags_announced = True

    def load(self, page: FlagPage) -> None:
        """One page of SELECT's listing (ascending UIDs above those already loaded)."""
        if not page.uids or (self.uids and page.uids[0] <= self.uids[-1]):
            return
        sets = [self._flags_tuple(f) for f in page.flag_sets]
        self.lines.changed(len(self.uids))
        self.version += 1
        start = len(self.uids)
        self.uids.extend(page.uids)
        self._modseqs.extend(page.modseqs)
        self._flags.extend([sets[i] for i in page.flag_index])
        if self._recent:
            # Usually one run at the end (the messages since the last claim).
            for a, b in self.recent_positions():
                for i in range(max(a, start), b + 1):
                    self._flags[i] = self.shown_flags(self.uids[i], self._flags[i])
        self.uidnext = max(self.uidnext, page.uids[-1] + 1)
        self.flags_announced = True

    def flags_reported(self, uids: Iterable[int]) -> None:
        """The client has just been sent the model's flags of ``uids`` (FETCH FLAGS answered
        from the model): nothing left to report for them."""
        if self._flag_changes:
            self._flag_changes.difference_update(uids)

    def record(self, meta: MessageMeta) -> None:
        """The client has just been sent ``meta``'s flags (FETCH, STORE): nothing left to report
        for it, unless it changes again."""
        seq = self.seq_of(meta.uid)
        if seq is None:
            return
        flags = self.shown_flags(meta.uid, meta.flags)
        modseq = max(self._modseqs[seq - 1], meta.modseq)
        self._flag_changes.discard(meta.uid)
        if flags != self._flags[seq - 1] or modseq != self._modseqs[seq - 1]:
            self._flags[seq - 1] = flags
            self._modseqs[seq - 1] = modseq
            self.lines.changed(seq - 1)
            self.version += 1

    # -- merging what the store says ---------------------------------------------------------------
    def _note(self, m: MessageMeta) -> None:
        if m.uid in self._expunged:
            return
        seq = self.seq_of(m.uid)
        if seq is not None:
            old = self._flags[seq - 1]
            flags = self.shown_flags(m.uid, m.flags)
            if old != flags and set(old) != set(flags):
                self._flags[seq - 1] = flags
                self._flag_changes.add(m.uid)
                self.lines.changed(seq - 1)
                self.version += 1
            if m.modseq > self._modseqs[seq - 1]:
                self._modseqs[seq - 1] = m.modseq
                self.lines.changed(seq - 1)
        elif not self.uids or m.uid > self.uids[-1]:
            self._new[m.uid] = (self.shown_flags(m.uid, m.flags), m.modseq)
            self.version += 1
        # Else: a UID below the client's highest that it never saw cannot appear (UIDs ascend,
        # RFC 9051 §2.3.1.1); ignore it rather than break the map.

    def _gone(self, uid: int) -> None:
        if self._new.pop(uid, None) is not None:
            self.version += 1
            return  # the client never heard of it
        if self.seq_of(uid) is not None:
            self.version += 1
            self._expunged.add(uid)
            self._flag_changes.discard(uid)

    def apply_changes(self, changes: Changes) -> None:
        """GetChanges since :attr:`highestmodseq`: new and changed messages, expunged UIDs."""
        for uid in changes.expunged_uids:
            self._gone(uid)
        for m in changes.changed:
            self._note(m)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)

    def appended(self, uidvalidity: int, uid: int, flags: Iterable[str], modseq: int) -> bool:
        """This session's APPEND stored ``uid`` at ``modseq`` (the store's answer). When that
        MODSEQ follows :attr:`highestmodseq` directly, nothing else changed in the mailbox in
        between (every change takes a MODSEQ of its own), so the new message is all a
        GetChanges would tell: it is pending for the EXISTS, and no store call is needed. False
        (nothing recorded) otherwise: the caller resynchronises."""
        if (
            not self.highestmodseq
            or modseq != self.highestmodseq + 1
            or uidvalidity != self.uidvalidity
            or uid <= self.store_highest_uid()
        ):
            return False
        self._new[uid] = (self.shown_flags(uid, flags), modseq)
        self.highestmodseq = modseq
        self.version += 1
        return True

    def apply_listing(self, messages: Sequence[MessageMeta], highestmodseq: int = 0) -> None:
        """A full ListMessages: whatever the client knows and is not listed was expunged."""
        present = {m.uid for m in messages}
        for uid in self.uids:
            if uid not in present:
                self._gone(uid)
        for uid in list(self._new):
            if uid not in present:
                del self._new[uid]
                self.version += 1
        for m in messages:
            self._note(m)
        self.highestmodseq = max(self.highestmodseq, highestmodseq)

    def mark_expunged(self, uids: Iterable[int]) -> None:
        """This session's own EXPUNGE / MOVE removed ``uids``."""
        for uid in uids:
            self._gone(uid)

    # -- pending updates -------------------------------------------------------------------------
    @property
    def has_pending(self) -> bool:
        return bool(self._new or self._expunged or self._flag_changes) or not self.flags_announced

    @property
    def has_pending_expunges(self) -> bool:
        return bool(self._expunged)

    def take_expunged(self) -> list[tuple[int, int]]:
        """Drop the expunged messages from the map; (uid, seq) in ascending UID order, each seq
        as it is once the previous ones are gone (RFC 9051 §7.5.1: an EXPUNGE decrements the
        numbers of the messages after it immediately)."""
        out: list[tuple[int, int]] = []
        for uid in sorted(self._expunged):
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            del self._modseqs[seq - 1]
            del self._flags[seq - 1]
            self.lines.renumbered(seq - 1)
            self.version += 1
            out.append((uid, seq))
        self._expunged.clear()
        return out

    def take_new(self) -> int:
        """Add the new messages to the map; the EXISTS count to send (0: nothing new)."""
        if not self._new:
            return 0
        self.lines.changed(len(self.uids))
        self.version += 1
        for uid in sorted(self._new):
            flags, modseq = self._new[uid]
            self.uids.append(uid)
            self._modseqs.append(modseq)
            self._flags.append(flags)
            self.uidnext = max(self.uidnext, uid + 1)
        self._new.clear()
        return len(self.uids)

    def take_flag_changes(self) -> list[FlagUpdate]:
        out = []
        for uid in sorted(self._flag_changes):
            seq = self.seq_of(uid)
            if seq is not None and uid not in self._expunged:
                out.append(FlagUpdate(seq, uid, self._flags[seq - 1], self._modseqs[seq - 1]))
        self._flag_changes.clear()
        return out
