"""SEARCH and UID SEARCH (RFC 9051 §6.4.4, RFC 3501 §6.4.4), ESEARCH results (RFC 4731, and
RFC 9051 §7.3.4 once IMAP4rev2 is enabled), SAVE and ``$`` (RFC 5182), MODSEQ (RFC 7162 §3.1.5).

The session's part: message sequence numbers and ``$`` become UID sets from the selected
mailbox's seq -> UID map; the store evaluates the criteria; matches are reported only for
messages the client has been told about (a UID above the last EXISTS is not a sequence number
yet, RFC 9051 §7.5.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from postmesh.common.backend import BackendUnavailable
from postmesh.imap_gw import model_search, response
from postmesh.imap_gw.backend import SearchRejected
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.sync import MailboxLost, resync
from postmesh.imap_gw.parser.search import (
    All,
    And,
    Not,
    Or,
    Recent,
    ReturnOption,
    Search,
    SearchKey,
    Seq,
    Uid,
    uses_modseq,
)
from postmesh.imap_gw.parser.sequence import STAR, SequenceSet
from postmesh.imap_gw.saved_search import runs
from postmesh.imap_gw.session import Result, Session, bad, no, ok
from postmesh.imap_gw.state import SelectedMailbox

_NOTHING: SearchKey = Not(All())


def compact(numbers: Iterable[int]) -> str:
    """Ascending numbers as a sequence-set with ranges: ``1:3,7,9:10`` (RFC 4731 §3.1 ALL)."""
    out: list[str] = []
    start = prev = -1
    for n in numbers:
        if n == prev + 1 and prev != -1:
            prev = n
            continue
        if prev != -1:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if prev != -1:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def _uid_key(uids: Sequence[int], spans: list[tuple[int, int]]) -> SearchKey:
    """A UID key for runs of map positions (0-based): consecutive messages become one range."""
    if not spans:
        return _NOTHING
    return Uid(SequenceSet(tuple((uids[a], uids[b]) for a, b in spans)))


def _seq_positions(seq: SequenceSet, exists: int) -> list[tuple[int, int]]:
    """0-based position runs a sequence set names; numbers above EXISTS name no message (SEARCH
    is lenient here where FETCH is not: the criterion simply matches nothing)."""
    spans: list[tuple[int, int]] = []
    for a, b in seq.ranges:
        lo, hi = (exists if a == STAR else a), (exists if b == STAR else b)
        lo, hi = min(lo, hi), min(max(lo, hi), exists)
        if lo <= hi:
            spans.append((lo - 1, hi - 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _saved_positions(session: Session, sel: SelectedMailbox) -> list[tuple[int, int]]:
    positions = []
    for u in session.saved_search.uids(sel):
        seq = sel.seq_of(u)
        if seq is not None:
            positions.append(seq - 1)
    return runs(positions)


def resolve(key: SearchKey, session: Session, sel: SelectedMailbox) -> SearchKey:
    """``key`` with every sequence-number set and ``$`` turned into a UID set."""
    if isinstance(key, Seq):
        if key.sequence.saved:
            return _uid_key(sel.uids, _saved_positions(session, sel))
        return _uid_key(sel.uids, _seq_positions(key.sequence, sel.exists))
    if isinstance(key, Uid) and key.sequence.saved:
        return _uid_key(sel.uids, _saved_positions(session, sel))
    if isinstance(key, Recent):
        # A session's own state (RFC 3501 §2.3.2), not the store's: the recent messages' UIDs.
        return _uid_key(sel.uids, sel.recent_positions())
    if isinstance(key, Not):
        return Not(resolve(key.key, session, sel))
    if isinstance(key, Or):
        return Or(resolve(key.left, session, sel), resolve(key.right, session, sel))
    if isinstance(key, And):
        return And(tuple(resolve(k, session, sel) for k in key.keys))
    return key


def _numbers(numbers: list[int]) -> bytes:
    """``numbers`` as decimal, separated by spaces."""
    return (("%d " * len(numbers)) % tuple(numbers))[:-1].encode()


async def _modseq_of(session: Session, sel: SelectedMailbox, uids: list[int]) -> int:
    """Highest MODSEQ of a few messages (ESEARCH MIN/MAX, RFC 7162 §3.1.5)."""
    assert session.user is not None
    key = Uid(SequenceSet(tuple((u, u) for u in uids)))
    return (await session.store.search(session.user, sel.name, key)).highest_modseq


async def store_search(
    session: Session, sel: SelectedMailbox, key: SearchKey
) -> tuple[list[int], list[int], int]:
    """Criteria the model cannot answer, by the store: the matching UIDs and sequence numbers
    the client has been told of, and the highest MODSEQ among them. Raises SearchRejected."""
    assert session.user is not None
    # Bounded by the client's view first: the store then loads only those messages.
    view = Uid(SequenceSet(((1, sel.uids[-1]),)))
    found = await session.store.search(session.user, sel.name, And((view, key)))
    uids, seqs = sel.present(found.uids)
    return uids, seqs, found.highest_modseq if uids else 0


async def matching(
    session: Session, sel: SelectedMailbox, criteria: SearchKey
) -> tuple[list[int], list[int]]:
    """The messages ``criteria`` match, as (UIDs, sequence numbers) in mailbox order, as SEARCH
    finds them (SORT and THREAD, RFC 5256 §4). Raises MailboxLost or SearchRejected."""
    if not sel.uids:
        return [], []
    key = resolve(criteria, session, sel)
    if model_search.answerable(key):
        await resync(session, force=True)
        return model_search.search(sel, key)
    uids, seqs, _ = await store_search(session, sel, key)
    return uids, seqs


@handles(Search, SELECTED)
async def search(session: Session, cmd: Search) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    returns = cmd.returns
    saving = returns is not None and ReturnOption.SAVE in returns
    if cmd.charset is not None and session.utf8:
        # RFC 6855 §3 (erratum 4029): after ENABLE UTF8=ACCEPT strings are UTF-8, no CHARSET.
        if saving:
            session.saved_search.clear()
        return bad("No CHARSET after ENABLE UTF8=ACCEPT: search strings are UTF-8")
    uids: list[int] = []
    seqs: list[int] = []
    modseq = 0
    want_modseq = uses_modseq(cmd.criteria)
    # The plain IMAP4rev1 answer of a model-answered search depends on the model's version and
    # the criteria only: a client polling SEARCH UNSEEN on an unchanged mailbox gets the last
    # answer again instead of one per message of work (10,000 messages: ~1.5 ms).
    memo: object = None
    if sel.uids:
        key = resolve(cmd.criteria, session, sel)
        if model_search.answerable(key):
            # Flags and UIDs only: the model, brought up to date with the store, answers.
            try:
                await resync(session, force=True)
            except MailboxLost:
                if saving:
                    session.saved_search.clear()
                sel.dirty = True  # the update after this command says BYE [NONEXISTENT]
                return no("Mailbox does not exist", "NONEXISTENT")
            except BackendUnavailable:
                if saving:
                    session.saved_search.clear()  # RFC 5182 §2.1: a failed SAVE empties $
                raise
            if returns is None and not session.rev2 and not want_modseq:
                memo = (sel.version, key, cmd.uid)
                if sel.search_memo is not None and sel.search_memo[0] == memo:
                    session.hold(sel.search_memo[1])  # with the tagged reply
                    return ok(f"{cmd.label} completed")
            uids, seqs = model_search.search(sel, key)
        else:
            try:
                uids, seqs, modseq = await store_search(session, sel, key)
            except SearchRejected as e:
                if saving:
                    session.saved_search.clear()  # RFC 5182 §2.1: a failed SAVE empties $
                return bad(f"Invalid search criteria: {e}")
            except BackendUnavailable:
                if saving:
                    session.saved_search.clear()
                raise
    numbers = uids if cmd.uid else seqs
    if want_modseq:
        session.condstore = True  # a CONDSTORE enabling command (RFC 7162 §3.1)

    if returns is None and not session.rev2:
        # IMAP4rev1: "* SEARCH n..." [SP "(" "MODSEQ" SP mod-sequence-value ")"] (RFC 7162 §7).
        # One str format of all the numbers: about half the time of joining str() of each
        # (measured with the 6,666 numbers of the bench's SEARCH UNSEEN).
        line = b"SEARCH " + _numbers(numbers) if numbers else b"SEARCH"
        if want_modseq and uids:
            line += b" (MODSEQ %d)" % modseq
        untagged = response.untagged(line)
        if memo is not None:
            sel.search_memo = (memo, untagged)
        session.hold(untagged)  # with the tagged reply
        return ok(f"{cmd.label} completed")

    opts = set(returns or (ReturnOption.ALL,))  # RETURN () is RETURN (ALL) (RFC 4731 §3.1)
    extremes_only = not opts & {ReturnOption.ALL, ReturnOption.COUNT}
    if saving:
        # RFC 5182 §2.4: with MIN and/or MAX only, $ holds just those messages.
        if extremes_only and opts & {ReturnOption.MIN, ReturnOption.MAX} and uids:
            kept = set()
            if ReturnOption.MIN in opts:
                kept.add(uids[0])
            if ReturnOption.MAX in opts:
                kept.add(uids[-1])
            session.saved_search.save(sel, sorted(kept))
        else:
            session.saved_search.save(sel, uids)
        if opts == {ReturnOption.SAVE}:
            # SAVE alone: no ESEARCH response (RFC 5182 §2.4).
            return ok(f"{cmd.label} completed")
    parts = [b"ESEARCH (TAG " + response.quoted(cmd.tag.encode()) + b")"]
    if cmd.uid:
        parts.append(b"UID")
    if numbers:
        if ReturnOption.MIN in opts:
            parts.append(b"MIN %d" % numbers[0])
        if ReturnOption.MAX in opts:
            parts.append(b"MAX %d" % numbers[-1])
        if ReturnOption.ALL in opts:
            parts.append(b"ALL " + compact(numbers).encode())
    if ReturnOption.COUNT in opts:
        parts.append(b"COUNT %d" % len(numbers))
    if want_modseq and uids:
        if extremes_only and len(uids) > 1:
            # MIN/MAX without ALL/COUNT: the MODSEQ of just the returned messages.
            ends = [uids[0]] if ReturnOption.MIN in opts else []
            ends += [uids[-1]] if ReturnOption.MAX in opts else []
            modseq = await _modseq_of(session, sel, ends)
        parts.append(b"MODSEQ %d" % modseq)
    session.hold(response.untagged(b" ".join(parts)))  # with the tagged reply
    return ok(f"{cmd.label} completed")
