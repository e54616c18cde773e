"""FETCH of only UID, FLAGS and MODSEQ, answered from the selected-mailbox model.

The model (``state.py``) holds every message's flags and MODSEQ as the store last told this
session. A GetChanges since the model's HIGHESTMODSEQ first brings it up to date with every
change committed before the command (by any session, on any replica, whether or not its event
arrived), so the answer is what a full listing from the store would give, at the cost of one
small call instead of the whole mailbox. Messages expunged in the store but not yet reported
to the client are left out, as the listing left them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from postmesh.imap_gw import response
from postmesh.imap_gw.commands.sync import MailboxLost, resync
from postmesh.imap_gw.line_cache import CHUNK
from postmesh.imap_gw.parser.fetch import FetchAtt, FetchKind
from postmesh.imap_gw.session import Result, Session, no, ok
from postmesh.imap_gw.state import Flags

MODEL_KINDS = frozenset({FetchKind.UID, FetchKind.FLAGS, FetchKind.MODSEQ})
# Each item's text and where its value is in a (seq, uid, flag list, modseq) row.
_ITEMS = {
    FetchKind.UID: (b"UID %d", 1),
    FetchKind.FLAGS: (b"FLAGS %s", 2),
    FetchKind.MODSEQ: (b"MODSEQ (%d)", 3),
}
# Response lines per write: one write per batch, and a bounded buffer for any mailbox size.
_LINES_PER_WRITE = 4096


def _render(
    line: Callable[[tuple[Any, ...]], bytes],
    atts: Sequence[FetchAtt],
    seqs: Sequence[int],
    uids: Sequence[int],
    flags: Sequence[Flags],
    modseqs: Sequence[int],
) -> bytes:
    """The lines of these messages. Built by C-level map over zipped columns (only those the
    items show): 10,000 of them in a few milliseconds."""
    flag_lists = {f: response.flag_list(f) for f in set(flags)}
    # Columns in (seq, uid, flag list, modseq) order, as _ITEMS indexes them.
    columns: list[Sequence[Any]] = [seqs, uids, list(map(flag_lists.__getitem__, flags)), modseqs]
    shown = [columns[0], *(columns[_ITEMS[a.kind][1]] for a in atts)]
    return b"".join(map(line, zip(*shown, strict=True)))


async def _send(session: Session, parts: Sequence[bytes]) -> None:
    """Cached chunks in writes of about _LINES_PER_WRITE lines."""
    per_write = max(1, _LINES_PER_WRITE // CHUNK)
    for i in range(0, len(parts), per_write):
        await session.send(b"".join(parts[i : i + per_write]))


def from_model(atts: Sequence[FetchAtt]) -> bool:
    """Can the model answer these items (no data from the store, no \\Seen side effect)?"""
    return all(a.kind in MODEL_KINDS for a in atts)


async def fetch_from_model(
    session: Session,
    uids: Sequence[int],
    atts: Sequence[FetchAtt],
    changed_since: int | None,
    *,
    by_uid: bool,
) -> Result:
    sel = session.selected
    assert sel is not None
    try:
        await resync(session, force=True)
    except MailboxLost:
        # The update after this command says BYE [NONEXISTENT] (``sync.flush_updates``).
        sel.dirty = True
        return no("Mailbox does not exist", "NONEXISTENT")
    items = b" ".join(_ITEMS[a.kind][0] for a in atts)
    line = (b"* %d FETCH (" + items + b")\r\n").__mod__
    gone = sel.has_pending_expunges and any(map(sel.is_expunged, uids))
    seqs, flags, modseqs = sel.columns(uids)
    if isinstance(seqs, range) and not gone and changed_since is None:
        # A run of consecutive messages (1:*), every one shown: the model's cached lines.
        count = sel.exists

        def render(i: int, j: int) -> bytes:
            return _render(line, atts, range(i + 1, j + 1), *sel.slice(i, j))

        parts = sel.lines.lines(items, seqs.start - 1, seqs.stop - 1, count, render)
        await _send(session, parts)
        shown_uids: Sequence[int] = uids
    else:
        since = -1 if changed_since is None else changed_since  # RFC 7162 §3.1.4.1
        keep = [
            i
            for i, (uid, modseq) in enumerate(zip(uids, modseqs, strict=True))
            if modseq > since and not sel.is_expunged(uid)
        ]
        if len(keep) != len(uids):
            seqs, flags, modseqs = (
                [seqs[i] for i in keep],
                [flags[i] for i in keep],
                [modseqs[i] for i in keep],
            )
            shown_uids = [uids[i] for i in keep]
        else:
            shown_uids = uids
        for i in range(0, len(seqs), _LINES_PER_WRITE):
            k = slice(i, i + _LINES_PER_WRITE)
            await session.send(_render(line, atts, seqs[k], shown_uids[k], flags[k], modseqs[k]))
    if any(a.kind is FetchKind.FLAGS for a in atts):
        sel.flags_reported(shown_uids)  # told: nothing left to report for them
    if gone and not by_uid:
        # RFC 9051 §7.1: some messages were expunged; the client learns which at the next NOOP.
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")
