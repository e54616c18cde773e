"""COPY / UID COPY (RFC 9051 §6.4.7) and MOVE / UID MOVE (RFC 6851), with COPYUID (RFC 4315 §3).

A message the client still sees but that was expunged elsewhere cannot be copied: the others
are, and the client hears of it through ``[EXPUNGEISSUED]`` (RFC 5530 §3). A missing destination
is ``NO [TRYCREATE]`` (RFC 9051 §6.4.7), so the client may CREATE it and retry.
"""

from __future__ import annotations

from collections.abc import Sequence

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw.backend import CopyResult, MailboxNotFound, OverQuota, StoreRefused
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.sync import report_expunged
from postmesh.imap_gw.parser.copy import Copy, Move
from postmesh.imap_gw.parser.sequence import SequenceError
from postmesh.imap_gw.session import MailboxNameError, Result, Session, bad, no, ok

log = get_logger(__name__)

_GONE = "Some of the requested messages no longer exist"


def ordered_set(numbers: Sequence[int]) -> str:
    """Numbers as a uid-set in the order given, runs joined (``3:5,9``). COPYUID pairs the
    n-th source UID with the n-th destination UID (RFC 4315 §3), so nothing is re-sorted."""
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)


def copyuid(r: CopyResult) -> str:
    return f"COPYUID {r.uidvalidity} {ordered_set(r.source_uids)} {ordered_set(r.dest_uids)}"


async def _copy_or_move(session: Session, cmd: Copy, *, move: bool) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    if move and sel.readonly:
        return no("Mailbox is read-only (EXAMINE)", "READ-ONLY")
    try:
        seq = cmd.sequence  # "$" already expanded by dispatch (RFC 5182)
        if cmd.uid:
            named = seq.resolve_uids(sel.uids)
        elif not seq.ranges:
            named = []  # an empty $ names no message (RFC 5182 §2.1)
        else:
            named = [sel.uid_at(n) for n in seq.resolve_seq(sel.exists)]
    except SequenceError as e:
        return bad(str(e), "CLIENTBUG")
    try:
        destination = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    uids = [u for u in named if not sel.is_expunged(u)]
    verb = cmd.name
    try:
        if not uids:
            # Nothing to copy, but a missing destination is still an error.
            await session.store.get_mailbox(session.user, destination)
            if named:
                return no(_GONE, "EXPUNGEISSUED")
            return ok(f"{verb} completed (no messages)")
        if move:
            r = await session.store.move_messages(session.user, sel.name, uids, destination)
        else:
            r = await session.store.copy_messages(session.user, sel.name, uids, destination)
    except MailboxNotFound:
        return no(f"Mailbox does not exist: {destination}", "TRYCREATE")
    except OverQuota:
        return no("Quota exceeded", "OVERQUOTA")
    except StoreRefused as e:
        return no(f"{verb} refused: {e}", "CANNOT")
    log.info(
        "messages copied",
        extra=kv(
            command=cmd.label, mailbox=sel.name, destination=destination, count=len(r.dest_uids)
        ),
    )
    if destination == sel.name:
        sel.dirty = True  # the new copies are announced with EXISTS before the tagged reply
    if not r.source_uids:
        return no(_GONE, "EXPUNGEISSUED")
    partial = len(r.source_uids) < len(named)
    if move:
        # RFC 6851 §3.3: COPYUID in an untagged OK before the EXPUNGEs (or VANISHED).
        await session.untagged(f"OK [{copyuid(r)}] Moved")
        if partial:
            await session.untagged(f"NO [EXPUNGEISSUED] {_GONE}")
        await report_expunged(session, r.expunged_uids)
        return ok(f"{cmd.label} completed")
    if partial:
        await session.untagged(f"NO [EXPUNGEISSUED] {_GONE}")
    return ok(f"{cmd.label} completed", copyuid(r))


@handles(Copy, SELECTED)
async def copy(session: Session, cmd: Copy) -> Result:
    return await _copy_or_move(session, cmd, move=False)


@handles(Move, SELECTED)
async def move(session: Session, cmd: Move) -> Result:
    return await _copy_or_move(session, cmd, move=True)
