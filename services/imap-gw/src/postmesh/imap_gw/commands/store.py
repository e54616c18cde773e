"""STORE and UID STORE (RFC 9051 §6.4.6, §6.4.9) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

from __future__ import annotations

from collections.abc import Sequence

from postmesh.imap_gw import response
from postmesh.imap_gw.backend import FlagsMode, MessageMeta
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.sync import uid_set
from postmesh.imap_gw.parser.sequence import SequenceError
from postmesh.imap_gw.parser.store import Store, StoreMode
from postmesh.imap_gw.session import Result, Session, bad, no, ok

_MODES = {
    StoreMode.REPLACE: FlagsMode.REPLACE,
    StoreMode.ADD: FlagsMode.ADD,
    StoreMode.REMOVE: FlagsMode.REMOVE,
}


async def _conditional(
    session: Session, cmd: Store, uids: Sequence[int], since: int
) -> tuple[Sequence[MessageMeta], Sequence[int]]:
    sel = session.selected
    assert sel is not None and session.user is not None
    if since == 0:
        # Every message has a MODSEQ above 0, so UNCHANGEDSINCE 0 always fails (RFC 7162
        # §3.1.3); the store reads 0 as "no condition", so it is not asked.
        return [], [u for u in uids if not sel.is_expunged(u)]
    r = await session.store.store_flags_unchanged_since(
        session.user, sel.name, uids, _MODES[cmd.mode], cmd.flags, since
    )
    return r.updated, r.modified


@handles(Store, SELECTED)
async def store(session: Session, cmd: Store) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    try:
        if cmd.uid:
            uids = cmd.sequence.resolve_uids(sel.uids)
        else:
            uids = [sel.uids[seq - 1] for seq in cmd.sequence.resolve_seq(sel.exists)]
    except SequenceError as e:
        return bad(str(e), "CLIENTBUG")
    if sel.readonly:
        return no("Mailbox is read-only (EXAMINE)", "READ-ONLY")
    if cmd.unchanged_since is not None:
        session.condstore = True  # a CONDSTORE enabling command (RFC 7162 §3.1)
    if not uids:
        return ok("STORE completed")
    if cmd.unchanged_since is None:
        updated: Sequence[MessageMeta] = await session.store.store_flags(
            session.user, sel.name, uids, _MODES[cmd.mode], cmd.flags
        )
        modified: Sequence[int] = []
    else:
        updated, modified = await _conditional(session, cmd, uids, cmd.unchanged_since)

    lines: list[bytes] = []
    for m in sorted(updated, key=lambda m: m.uid):
        seq = sel.seq_of(m.uid)
        if seq is None:
            continue
        before, before_modseq = sel.flags_of(m.uid), sel.modseq_of(m.uid)
        sel.record(m)
        shown = sel.flags_of(m.uid)  # the store's flags, and \Recent if recent here
        changed = m.modseq > before_modseq or set(shown) != set(before)
        items: list[bytes] = []
        if cmd.uid or session.qresync:
            items.append(b"UID %d" % m.uid)
        if not cmd.silent:
            # The new flags of every message of the set (RFC 9051 §6.4.6).
            items.append(b"FLAGS " + response.flag_list(shown))
        elif not (session.condstore and changed):
            continue
        if session.condstore:
            # With CONDSTORE the MODSEQ goes out even after .SILENT, so the client's cache
            # stays right (RFC 7162 §3.1.3).
            items.append(b"MODSEQ (%d)" % m.modseq)
        lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
    if lines:
        session.hold(b"".join(lines))  # with the tagged reply
    if modified:
        # RFC 7162 §3.1.3: the messages not changed because they had changed since; UIDs for
        # UID STORE, else sequence numbers.
        if cmd.uid:
            numbers = list(modified)
        else:
            numbers = [s for s in (sel.seq_of(u) for u in modified) if s is not None]
        if numbers:
            return ok("Conditional STORE failed", f"MODIFIED {uid_set(numbers)}")
    return ok("STORE completed")
