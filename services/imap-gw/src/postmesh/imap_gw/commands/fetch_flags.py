"""FETCH of only UID, FLAGS and MODSEQ, answered from the selected-mailbox model.

The model (``state.py``) holds every message's flags and MODSEQ as the store last told this
session. A GetChanges since the model's HIGHESTMODSEQ first brings it up to date with every
change committed before the command (by any session, on any replica, whether or not its event
arrived), so the answer is what a full listing from the store would give, at the cost of one
small call instead of the whole mailbox. Messages expunged in the store but not yet reported
to the client are left out, as the listing left them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from postmesh.imap_gw import response
from postmesh.imap_gw.commands.sync import MailboxLost, resync
from postmesh.imap_gw.parser.fetch import FetchAtt, FetchKind
from postmesh.imap_gw.session import Result, Session, no, ok
from postmesh.imap_gw.state import Flags

MODEL_KINDS = frozenset({FetchKind.UID, FetchKind.FLAGS, FetchKind.MODSEQ})
# Each item's text and where its value is in the (seq, uid, flags, modseq) row below.
_ITEMS = {
    FetchKind.UID: (b"UID %d", 1),
    FetchKind.FLAGS: (b"FLAGS %s", 2),
    FetchKind.MODSEQ: (b"MODSEQ (%d)", 3),
}
# Response lines per write: one write per batch, and a bounded buffer for any mailbox size.
_LINES_PER_WRITE = 4096


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
    fmt = b"* %d FETCH (" + b" ".join(_ITEMS[a.kind][0] for a in atts) + b")\r\n"
    pick = itemgetter(0, *(_ITEMS[a.kind][1] for a in atts))
    flag_bytes: dict[Flags, bytes] = {}
    lines: list[bytes] = []
    # UIDs whose flags the client is sent: nothing left to report for them.
    told: list[int] | None = [] if any(a.kind is FetchKind.FLAGS for a in atts) else None
    gone = False
    for uid in uids:
        seq = sel.seq_of(uid)
        if seq is None or sel.is_expunged(uid):
            gone = True
            continue
        flags, modseq = sel.at(seq)
        if changed_since is not None and modseq <= changed_since:
            continue  # RFC 7162 §3.1.4.1
        fl = flag_bytes.get(flags)
        if fl is None:
            fl = flag_bytes[flags] = response.flag_list(flags)
        lines.append(fmt % pick((seq, uid, fl, modseq)))
        if told is not None:
            told.append(uid)
        if len(lines) >= _LINES_PER_WRITE:
            await session.send(b"".join(lines))
            lines = []
    if lines:
        await session.send(b"".join(lines))
    if told:
        sel.flags_reported(told)
    if gone and not by_uid:
        # RFC 9051 §7.1: some messages were expunged; the client learns which at the next NOOP.
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")
