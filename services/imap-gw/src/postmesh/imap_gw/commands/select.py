"""SELECT/EXAMINE with CONDSTORE and QRESYNC (RFC 9051 §6.3.2-3, RFC 7162), CLOSE and UNSELECT."""

from __future__ import annotations

import asyncio

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw import response, vanished
from postmesh.imap_gw.backend import MailboxNotFound
from postmesh.imap_gw.commands import AUTHENTICATED, SELECTED, handles
from postmesh.imap_gw.commands.sync import flags_response, load_messages, uid_set
from postmesh.imap_gw.parser.commands import Close, Examine, Select, Unselect
from postmesh.imap_gw.parser.sequence import SequenceSet
from postmesh.imap_gw.parser.store import QresyncParams
from postmesh.imap_gw.session import DELIMITER, MailboxNameError, Result, Session, bad, no, ok
from postmesh.imap_gw.state import SYSTEM_FLAGS, SelectedMailbox

log = get_logger(__name__)


def _in_set(s: SequenceSet, uid: int) -> bool:
    return any(min(a, b) <= uid <= max(a, b) for a, b in s.ranges)


async def _qresync(session: Session, sel: SelectedMailbox, q: QresyncParams) -> None:
    """RFC 7162 §3.2.5.1: what changed since the client's MODSEQ, as ``VANISHED (EARLIER)`` and
    FETCH responses, before the tagged OK. A different UIDVALIDITY means a full resync."""
    assert session.user is not None
    if q.uidvalidity != sel.uidvalidity:
        return
    changes = await session.store.get_changes(session.user, sel.name, q.modseq)
    if changes.expunged_incomplete:
        # Tombstones since the client's MODSEQ are gone (the store's janitor): every UID it
        # may know that is not live, a superset the client sorts out (vanished.py).
        asked = q.known_uids.ranges if q.known_uids is not None else [(1, sel.uidnext - 1)]
        bounded = [(min(a, b), min(max(a, b), sel.uidnext - 1)) for a, b in asked]
        gone = vanished.not_live(sel.uids, [(a, b) for a, b in bounded if a <= b])
        if gone:
            await session.untagged("VANISHED (EARLIER) " + vanished.uid_set(gone))
    else:
        uids = [u for u in changes.expunged_uids if u < sel.uidnext]
        if q.known_uids is not None:
            # Only UIDs the client says it has (RFC 7162 §3.2.5.1).
            uids = [u for u in uids if _in_set(q.known_uids, u)]
        if uids:
            await session.untagged("VANISHED (EARLIER) " + uid_set(uids))
    lines = []
    for m in changes.changed:
        seq = sel.seq_of(m.uid)
        if seq is None:
            continue
        lines.append(
            b"* %d FETCH (UID %d FLAGS " % (seq, m.uid)
            + response.flag_list(sel.flags_of(m.uid))
            + b" MODSEQ (%d))\r\n" % sel.modseq_of(m.uid)
        )
    if lines:
        await session.send(b"".join(lines))


@handles(Select, AUTHENTICATED)
async def select(session: Session, cmd: Select) -> Result:
    assert session.user is not None
    params = cmd.params
    if params.qresync is not None and not session.qresync:
        # RFC 7162 §3.2.5: QRESYNC parameters need ENABLE QRESYNC first.
        return bad("ENABLE QRESYNC first")
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    if params.condstore:
        session.condstore = True  # a CONDSTORE enabling command (RFC 7162 §3.1)
    if session.selected is not None:
        # RFC 9051 §6.3.2: the old mailbox is closed (without expunge) even if this one fails.
        session.deselect()
        await session.untagged("OK [CLOSED] Previous mailbox closed")
    # IMAP4rev1 \Recent (RFC 3501 §2.3.2): SELECT claims what no session was told of yet, at
    # the same time as it reads the mailbox; EXAMINE claims nothing (RFC 3501 §6.3.2).
    claiming = not session.rev2 and not cmd.readonly
    try:
        if claiming:
            info, claim = await asyncio.gather(
                session.store.get_mailbox(session.user, name),
                session.store.claim_recent(session.user, name, 0),
            )
        else:
            info, claim = await session.store.get_mailbox(session.user, name), None
        if info.noselect:
            # A parent kept for its inferiors (RFC 9051 §6.3.5) holds no messages.
            return no(f"Mailbox is not selectable: {name}", "NONEXISTENT")
        sel = SelectedMailbox(
            name,
            info.uidvalidity,
            readonly=cmd.readonly,
            uidnext=info.uidnext,
            highestmodseq=info.highestmodseq,
        )
        if claim is not None and claim.uidvalidity == info.uidvalidity:
            sel.claims_recent = True
            sel.claimed(claim.first, claim.last)
        elif cmd.readonly and not session.rev2:
            # What nobody claimed is recent here too, without claiming it (RFC 3501 §6.3.2).
            sel.watches_recent = True
            sel.claimed(info.first_recent_uid, info.uidnext - 1)
        await load_messages(session, sel)
    except MailboxNotFound:
        return no(f"Mailbox does not exist: {name}", "NONEXISTENT")
    sel.qresync = session.qresync
    out = [
        response.untagged(flags_response(sel)),
        response.untagged(b"%d EXISTS" % sel.exists),
    ]
    if not session.rev2:
        # IMAP4rev1 (RFC 3501 §6.3.1) requires RECENT.
        sel.recent_told = sel.recent_count()
        out.append(response.untagged(b"%d RECENT" % sel.recent_told))
        unseen = sel.first_unseen()
        if unseen is not None:
            out.append(response.status_line(response.Status.OK, "First unseen", f"UNSEEN {unseen}"))
    ok_line = response.status_line
    s = response.Status.OK
    out.append(ok_line(s, "UIDs valid", f"UIDVALIDITY {sel.uidvalidity}"))
    out.append(ok_line(s, "Predicted next UID", f"UIDNEXT {sel.uidnext}"))
    permanent = "()" if cmd.readonly else "(" + " ".join([*SYSTEM_FLAGS, "\\*"]) + ")"
    out.append(ok_line(s, "Flags permitted", f"PERMANENTFLAGS {permanent}"))
    if sel.highestmodseq:
        # RFC 7162 §3.1.2.1: with every successful SELECT/EXAMINE of a mailbox with MODSEQs.
        out.append(ok_line(s, "Highest", f"HIGHESTMODSEQ {sel.highestmodseq}"))
    else:
        out.append(ok_line(s, "No persistent MODSEQ", "NOMODSEQ"))
    if session.rev2:
        # RFC 9051 §6.3.2: the server MUST return a LIST response with the mailbox name.
        out.append(
            response.untagged(f'LIST () "{DELIMITER}" '.encode() + session.encode_mailbox(name))
        )
    await session.send(b"".join(out))
    session.select(sel)
    if params.qresync is not None:
        await _qresync(session, sel, params.qresync)
    log.debug("mailbox selected", extra=kv(mailbox=name, exists=sel.exists))
    if cmd.readonly:
        return ok("EXAMINE completed", "READ-ONLY")
    return ok("SELECT completed", "READ-WRITE")


# EXAMINE is SELECT read-only; the handler reads cmd.readonly.
handles(Examine, AUTHENTICATED)(select)


@handles(Close, SELECTED)
async def close(session: Session, cmd: Close) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    session.deselect()
    if not sel.readonly:
        # CLOSE expunges \Deleted messages silently: no EXPUNGE responses (RFC 9051 §6.4.1).
        try:
            await session.store.expunge(session.user, sel.name)
        except MailboxNotFound:
            pass
    return ok("CLOSE completed")


@handles(Unselect, SELECTED)
async def unselect(session: Session, cmd: Unselect) -> Result:
    # RFC 3691: like CLOSE, without the expunge.
    session.deselect()
    return ok("UNSELECT completed")
