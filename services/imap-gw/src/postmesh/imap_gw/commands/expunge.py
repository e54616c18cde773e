"""EXPUNGE and UID EXPUNGE (RFC 9051 §6.4.3, RFC 4315 §2.1)."""

from __future__ import annotations

from collections.abc import Sequence

from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.sync import report_expunged
from postmesh.imap_gw.parser.store import Expunge
from postmesh.imap_gw.session import Result, Session, no, ok


@handles(Expunge, SELECTED)
async def expunge(session: Session, cmd: Expunge) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    if sel.readonly:
        return no("Mailbox is read-only (EXAMINE)", "READ-ONLY")
    gone: Sequence[int]
    if cmd.uids is None:
        gone = await session.store.expunge(session.user, sel.name)
    else:
        # Only the UIDs the client knows of (and not already expunged) can be named.
        uids = [u for u in cmd.uids.resolve_uids(sel.uids) if not sel.is_expunged(u)]
        gone = await session.store.expunge_uids(session.user, sel.name, uids) if uids else []
    # One EXPUNGE (or VANISHED) per message, each number counting the ones before it.
    await report_expunged(session, gone)
    return ok(f"{cmd.label} completed")
