"""The selected mailbox kept in step with the store, and its updates told to the client.

Events (``mailbox_events.py``) only mark a session's mailbox dirty; what changed always comes
from the store: GetChanges after the last HIGHESTMODSEQ seen, or a full ListMessages when the
mailbox has no MODSEQs. Updates go out in this order, each where the RFCs allow it:

- EXPUNGE (or VANISHED under QRESYNC, RFC 7162 §3.2.10) only when ``allow_expunge``: never while
  answering FETCH, STORE or SEARCH, nor with no command in progress (RFC 9051 §7.5.1);
- EXISTS for new messages, after any command (RFC 9051 §7.4.1; it never decreases: expunged
  messages the client has not been told of still count);
- FLAGS when a keyword appeared, and ``FETCH (FLAGS ...)`` for flag changes (RFC 9051 §5.2),
  with UID, and MODSEQ once CONDSTORE is enabled (RFC 7162 §3.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw import response
from postmesh.imap_gw.backend import MailboxNotFound, MessageMeta
from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.session import Session
from postmesh.imap_gw.state import SYSTEM_FLAGS, SelectedMailbox

log = get_logger(__name__)

# RFC 9051 §7.5.1: no EXPUNGE while answering these (their UID forms are other commands).
_NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH"})


async def list_messages(
    session: Session, mailbox: str, after_uid: int = 0, up_to_uid: int | None = None
) -> list[MessageMeta]:
    """Messages with after_uid < UID (<= up_to_uid), page by page in ascending UID order."""
    assert session.user is not None
    out: list[MessageMeta] = []
    limit = session.settings.imap_list_page_size
    while True:
        if up_to_uid is not None:
            # UIDs ascend: no more than this many can be in the range (FETCH 5:14 asks for
            # ten messages' metadata, not a page of a thousand).
            limit = max(1, min(limit, up_to_uid - after_uid))
        page = await session.store.list_messages(session.user, mailbox, after_uid, limit)
        for m in page.messages:
            if up_to_uid is not None and m.uid > up_to_uid:
                return out
            out.append(m)
        if not page.more or not page.messages:
            return out
        after_uid = page.messages[-1].uid
        if up_to_uid is not None and after_uid >= up_to_uid:
            return out


async def load_messages(session: Session, sel: SelectedMailbox) -> None:
    """SELECT's listing: every message's UID, flags and MODSEQ into ``sel``, page by page
    (ListMessageFlags: packed columns, not a message object each)."""
    assert session.user is not None
    after_uid = 0
    limit = session.settings.imap_select_page_size
    while True:
        page = await session.store.list_flags(session.user, sel.name, after_uid, limit)
        sel.load(page)
        if not page.more or not page.uids:
            return
        after_uid = page.uids[-1]


def expunge_allowed(cmd: Command) -> bool:
    """May untagged EXPUNGE responses be sent while answering ``cmd``? (RFC 9051 §7.5.1)"""
    return not (cmd.name in _NO_EXPUNGE_DURING and not getattr(cmd, "uid", False))


class MailboxLost(Exception):
    """The selected mailbox was deleted, or recreated with a new UIDVALIDITY."""


async def resync(session: Session, *, force: bool = False) -> None:
    """Learn from the store what changed in the selected mailbox (if an event said something
    did, or ``force``). Raises MailboxLost."""
    sel = session.selected
    if sel is None or session.user is None or not (sel.dirty or force):
        return
    # Cleared first: an event that arrives while we ask marks it again.
    sel.dirty = False
    try:
        unclaimed = 0  # the store's first unclaimed UID (\Recent), 0: not told
        if sel.highestmodseq:
            changes = await session.store.get_changes(session.user, sel.name, sel.highestmodseq)
            unclaimed = changes.first_recent_uid
            if changes.uidvalidity and changes.uidvalidity != sel.uidvalidity:
                raise MailboxLost(sel.name)  # recreated under the same name
            if changes.expunged_incomplete:
                # The store dropped tombstones since our MODSEQ (its janitor): what is not
                # listed any more was expunged.
                listing = await list_messages(session, sel.name)
                sel.apply_listing(listing, changes.highestmodseq)
            else:
                sel.apply_changes(changes)
        else:
            # No MODSEQs to go by: compare the whole UID list (RFC 9051 §7.5.1 bookkeeping).
            info = await session.store.get_mailbox(session.user, sel.name)
            if info.uidvalidity != sel.uidvalidity:
                raise MailboxLost(sel.name)
            sel.apply_listing(await list_messages(session, sel.name), info.highestmodseq)
            unclaimed = info.first_recent_uid
        await _claim_new(session, sel, unclaimed)
    except MailboxNotFound as e:
        raise MailboxLost(sel.name) from e


async def _claim_new(session: Session, sel: SelectedMailbox, unclaimed: int) -> None:
    """A read-write IMAP4rev1 session is the first told of new messages unless another session
    was (RFC 3501 §2.3.2): it claims them before its EXISTS, so they are \\Recent here. A
    read-only one shows as recent those nobody has claimed (``unclaimed`` on), claiming none."""
    if not (sel.claims_recent or sel.watches_recent) or session.user is None:
        return
    top = sel.store_highest_uid()
    if top <= sel.claimed_recent:
        return
    if sel.watches_recent:
        if unclaimed:
            sel.claimed(unclaimed, top)
        return
    claim = await session.store.claim_recent(session.user, sel.name, top)
    if claim is None or claim.uidvalidity != sel.uidvalidity:
        sel.claims_recent = False  # a store without claims; a recreated mailbox is lost anyway
        return
    sel.claimed(claim.first, claim.last)


def uid_set(uids: Iterable[int]) -> str:
    """Ascending UIDs as a compact uid-set: ``1:3,7,9:10``."""
    out: list[str] = []
    start = prev = -1
    for u in sorted(uids):
        if u == prev + 1:
            prev = u
            continue
        if start >= 0:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = u
    if start >= 0:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


async def _send_expunges(session: Session, sel: SelectedMailbox) -> None:
    gone = sel.take_expunged()
    if not gone:
        return
    if session.qresync:
        await session.untagged("VANISHED " + uid_set(uid for uid, _ in gone))
        return
    # Ascending UIDs, each number as it is after the previous EXPUNGEs (RFC 9051 §7.5.1).
    await session.send(b"".join(b"* %d EXPUNGE\r\n" % seq for _, seq in gone))


def flags_response(sel: SelectedMailbox) -> bytes:
    return b"FLAGS " + response.flag_list([*SYSTEM_FLAGS, *sel.keywords()])


async def send_pending(session: Session, *, allow_expunge: bool) -> None:
    """Tell the client what the model holds for it, without asking the store."""
    sel = session.selected
    if sel is None or not sel.has_pending:
        return
    if allow_expunge:
        await _send_expunges(session, sel)
    exists = sel.take_new()
    if exists:
        await session.untagged(f"{exists} EXISTS")
        if not session.rev2 and (recent := sel.recent_count()) != sel.recent_told:
            # RFC 3501 §7.3.2: the number of recent messages changed (IMAP4rev1 only).
            sel.recent_told = recent
            await session.untagged(f"{recent} RECENT")
    if not sel.flags_announced:
        # A new keyword: the FLAGS response is an update of the mailbox's flags (RFC 9051
        # §7.3.5); PERMANENTFLAGS keeps \* so nothing else changes.
        await session.untagged(flags_response(sel))
        sel.flags_announced = True
    updates = sel.take_flag_changes()
    if updates:
        lines = []
        for u in updates:
            item = b"* %d FETCH (UID %d FLAGS " % (u.seq, u.uid) + response.flag_list(u.flags)
            if session.condstore:
                item += b" MODSEQ (%d)" % u.modseq
            lines.append(item + b")\r\n")
        await session.send(b"".join(lines))


async def flush_updates(session: Session, allow_expunge: bool, *, force: bool = False) -> None:
    """Resynchronise (when notified, or ``force``) and send the pending updates. A lost mailbox
    ends the session with BYE (its sequence numbers can no longer mean anything)."""
    sel = session.selected
    if sel is None:
        return
    try:
        await resync(session, force=force)
    except MailboxLost:
        log.info("selected mailbox gone", extra=kv(mailbox=sel.name))
        await session.say_bye("Selected mailbox was deleted or recreated", "NONEXISTENT")
        return
    await send_pending(session, allow_expunge=allow_expunge)


async def report_expunged(session: Session, uids: Sequence[int]) -> None:
    """For commands that remove messages themselves (EXPUNGE, UID EXPUNGE, MOVE): mark ``uids``
    expunged and report them, with any other pending expunges, right now."""
    sel = session.selected
    if sel is None:
        return
    sel.mark_expunged(uids)
    await _send_expunges(session, sel)


async def poll_selected(session: Session) -> None:
    """NOOP / CHECK: ask the store even without an event (the bus may have lost one) and report
    everything, expunges included (RFC 9051 §6.1.2, §6.4.1)."""
    await flush_updates(session, allow_expunge=True, force=True)
