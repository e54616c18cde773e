"""APPEND (RFC 9051 §6.3.12) with APPENDUID (RFC 4315 §3), TRYCREATE, OVERQUOTA (RFC 9208 §4.1)
and UTF8 data (RFC 6855 §4).

The message is never held whole: each chunk of the client's literal goes to the store's
streaming Append as it arrives. What can be refused before the data is sent (size, mailbox,
state) is refused before the "+" continuation of a synchronizing literal, so the client does not
upload in vain. The last chunk is held back until the rest of the command has been read and
checked, so a malformed command ending stores nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from postmesh.common.grpc import CHUNK_BYTES
from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw.backend import MailboxNotFound, OverQuota, StoreRefused
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.connection import LiteralAhead
from postmesh.imap_gw.parser.append import Append, check_append_tail
from postmesh.imap_gw.parser.errors import ParseError
from postmesh.imap_gw.session import MailboxNameError, Result, Session, bad, no, ok

log = get_logger(__name__)


def _content(ahead: LiteralAhead, cmd: Append) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        held: bytes | None = None
        async for data in ahead.chunks(CHUNK_BYTES):
            if held is not None:
                yield held
            held = data
        check_append_tail(await ahead.rest(), utf8=cmd.utf8)  # raises ParseError
        if held is not None:
            yield held

    return chunks()


async def _refuse(session: Session, ahead: LiteralAhead, result: Result) -> Result:
    await ahead.skip(session.settings.imap_max_message_bytes)
    return result


@handles(Append, AUTHENTICATED)
async def append(session: Session, cmd: Append) -> Result:
    ahead = session.literal
    assert ahead is not None and session.user is not None
    limit = session.settings.imap_max_message_bytes
    if cmd.size > limit:
        if not ahead.synchronizing:
            # LITERAL+: the data is on its way, more than we will read (RFC 7888 §4).
            return await _refuse(session, ahead, no("Message too large", "TOOBIG"))
        return no(f"Message too large (the limit is {limit} octets)", "TOOBIG")
    if cmd.size == 0:
        return await _refuse(session, ahead, no("An empty message cannot be stored"))
    if cmd.utf8 and not session.utf8:
        return await _refuse(session, ahead, bad("UTF8 data needs ENABLE UTF8=ACCEPT first"))
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return await _refuse(session, ahead, bad(f"Invalid mailbox name: {e}"))
    trycreate = no(f"Mailbox does not exist: {name}", "TRYCREATE")
    sel = session.selected
    known = name == session.appended_to or (sel is not None and sel.name == name)
    if not known:
        # Before the "+": no upload into a mailbox that is not there (RFC 9051 §6.3.12).
        # Not asked again for the selected mailbox or the one this session last appended to
        # (a client filling a mailbox): if one was deleted meanwhile, the store's Append
        # refuses it all the same, only after the upload.
        try:
            await session.store.get_mailbox(session.user, name)
        except MailboxNotFound:
            return await _refuse(session, ahead, trycreate)
    # RFC 3501 §6.3.11: APPEND sets \Recent; into its selected mailbox, this session is the
    # one first told of the message, so it claims it in the store's write (ADR 87).
    claiming = sel is not None and sel.name == name and sel.claims_recent
    try:
        # A message's lines end in CRLF (RFC 5322 §2.1): bare LFs (a script's LF-only message)
        # are stored as CRLF, so FETCH, RFC822.SIZE and POP3 agree (as Dovecot shows them); a
        # literal8 is binary data, stored as sent (RFC 3516 §4.4).
        r = await session.store.append(
            session.user, name, cmd.flags, cmd.internal_date or 0, cmd.size,
            _content(ahead, cmd), claim_recent=claiming, normalize_line_ends=not cmd.binary,
        )  # fmt: skip
    except ParseError as e:
        return bad(e.message, e.code)
    except MailboxNotFound:
        session.appended_to = None
        return await _refuse(session, ahead, trycreate)
    except OverQuota:
        return await _refuse(session, ahead, no("Quota exceeded", "OVERQUOTA"))
    except StoreRefused as e:
        return await _refuse(session, ahead, no(f"APPEND refused: {e}"))
    # The store logs each stored message (user, mailbox, UID, size) at INFO; this line adds the
    # session and costs ~0.1 ms of imap-gw CPU per APPEND (ADR 0056), so only at DEBUG.
    log.debug("message appended", extra=kv(mailbox=name, uid=r.uid, size=cmd.size))
    session.appended_to = name
    # EXISTS before the tagged reply (RFC 9051 §6.3.12): from the answer alone when it says
    # nothing else changed meanwhile, else from the store (ADR 0064).
    if sel is not None and sel.name == name:
        if not sel.appended(r.uidvalidity, r.uid, r.flags, r.modseq):
            sel.dirty = True
        if claiming and r.recent_first and r.uidvalidity == sel.uidvalidity:
            sel.claimed(r.recent_first, r.uid)
    return ok("APPEND completed", f"APPENDUID {r.uidvalidity} {r.uid}")
