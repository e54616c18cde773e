"""The FETCH lines the selected-mailbox model keeps (``line_cache.py``) are always what
rendering the model afresh gives: random changes of every kind the model takes (SELECT pages,
EXISTS, flag and MODSEQ changes from the store or this session, expunges), each followed by
FETCHes of runs of messages across chunk boundaries."""

from __future__ import annotations

import random
from array import array

from postmesh.imap_gw.backend import Changes, FlagPage, MessageMeta
from postmesh.imap_gw.commands.fetch_flags import _render
from postmesh.imap_gw.line_cache import CHUNK, LineCache
from postmesh.imap_gw.parser.fetch import FetchAtt, FetchKind
from postmesh.imap_gw.state import SelectedMailbox

_FLAGS = [(), ("\\Seen",), ("\\Seen", "\\Flagged"), ("$Work",), ("\\Deleted", "\\Seen")]
_ATTS = [
    [FetchAtt(FetchKind.FLAGS)],
    [FetchAtt(FetchKind.UID), FetchAtt(FetchKind.FLAGS)],
    [FetchAtt(FetchKind.MODSEQ), FetchAtt(FetchKind.FLAGS), FetchAtt(FetchKind.UID)],
]
_ITEMS = {FetchKind.UID: b"UID %d", FetchKind.FLAGS: b"FLAGS %s", FetchKind.MODSEQ: b"MODSEQ (%d)"}


def _fetch(sel: SelectedMailbox, atts: list[FetchAtt], lo: int, hi: int) -> tuple[bytes, bytes]:
    """(cached, fresh) lines of messages lo..hi-1 (0-based)."""
    items = b" ".join(_ITEMS[a.kind] for a in atts)
    line = (b"* %d FETCH (" + items + b")\r\n").__mod__

    def render(i: int, j: int) -> bytes:
        return _render(line, atts, range(i + 1, j + 1), *sel.slice(i, j))

    cached = b"".join(sel.lines.lines(items, lo, hi, sel.exists, render))
    return cached, render(lo, hi)


def test_cached_lines_follow_every_change_of_the_model() -> None:
    rng = random.Random(41)
    sel = SelectedMailbox("INBOX", 1, readonly=False)
    n = 3 * CHUNK + 17
    sel.load(FlagPage(array("I", range(1, n + 1)), array("Q", [5] * n), [0] * n, [()], False))
    next_uid, modseq = n + 1, 6
    for step in range(300):
        op = rng.randrange(6)
        uids = list(sel.uids)
        if op == 0 and uids:  # flags changed elsewhere, learnt by GetChanges
            changed = [
                MessageMeta(u, rng.choice(_FLAGS), 10, 0, modseq)
                for u in rng.sample(uids, min(len(uids), rng.randrange(1, 20)))
            ]
            sel.apply_changes(Changes(changed, [], modseq))
        elif op == 1 and uids:  # this session's STORE
            sel.record(MessageMeta(rng.choice(uids), rng.choice(_FLAGS), 10, 0, modseq))
        elif op == 2 and uids:  # expunged elsewhere, then reported
            sel.apply_changes(Changes([], rng.sample(uids, min(len(uids), 3)), modseq))
            sel.take_expunged()
        elif op == 3:  # new mail, then EXISTS
            new = [MessageMeta(next_uid + k, rng.choice(_FLAGS), 10, 0, modseq) for k in range(5)]
            sel.apply_changes(Changes(new, [], modseq))
            sel.take_new()
            next_uid += 5
        elif op == 4:  # messages told by APPEND's EXISTS path
            sel.append([MessageMeta(next_uid, rng.choice(_FLAGS), 10, 0, modseq)])
            next_uid += 1
        elif op == 5 and uids:  # a MODSEQ change alone (same flags)
            u = rng.choice(uids)
            sel.apply_changes(Changes([MessageMeta(u, sel.flags_of(u), 10, 0, modseq)], [], modseq))
        modseq += 1
        count = sel.exists
        atts = rng.choice(_ATTS)
        for lo, hi in ((0, count), (rng.randrange(count + 1), count)):
            lo, hi = min(lo, hi), max(lo, hi)
            cached, fresh = _fetch(sel, atts, lo, hi)
            assert cached == fresh, (step, op, lo, hi)


def test_only_changed_chunks_are_rendered_again() -> None:
    cache = LineCache()
    calls: list[tuple[int, int]] = []

    def render(i: int, j: int) -> bytes:
        calls.append((i, j))
        return b"x" * (j - i)

    count = 2 * CHUNK + 10
    assert b"".join(cache.lines(b"k", 0, count, count, render)) == b"x" * count
    assert calls == [(0, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, count)]
    calls.clear()
    cache.lines(b"k", 0, count, count, render)
    assert calls == []  # all cached
    cache.changed(CHUNK + 3)
    cache.lines(b"k", 0, count, count, render)
    assert calls == [(CHUNK, 2 * CHUNK)]
    calls.clear()
    cache.lines(b"k", 5, count, count, render)  # a partial first chunk is not kept
    assert calls == [(5, CHUNK)]
    calls.clear()
    cache.renumbered(CHUNK)
    cache.lines(b"k", 0, count, count, render)
    assert calls == [(CHUNK, 2 * CHUNK), (2 * CHUNK, count)]
    calls.clear()
    cache.lines(b"other", 0, count, count, render)  # another item list: all afresh
    assert len(calls) == 3
