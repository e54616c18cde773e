"""FETCH and UID FETCH (RFC 9051 §6.4.5, §6.4.9)."""

from __future__ import annotations

from postmesh.imap_gw import response
from postmesh.imap_gw.backend import FlagsMode, MessageMeta, MessageNotFound
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.sync import list_messages
from postmesh.imap_gw.message import SectionUnsupported, partial, section_bytes, split
from postmesh.imap_gw.parser.commands import Fetch
from postmesh.imap_gw.parser.fetch import FetchAtt, FetchKind
from postmesh.imap_gw.parser.sequence import SequenceError
from postmesh.imap_gw.session import Result, Session, bad, no, ok

_NOT_YET = frozenset(
    {
        FetchKind.ENVELOPE,
        FetchKind.BODYSTRUCTURE,
        FetchKind.BODY_STRUCTURE,
        FetchKind.BINARY,
        FetchKind.BINARY_SIZE,
    }
)
_CONTENT = frozenset(
    {FetchKind.RFC822, FetchKind.RFC822_HEADER, FetchKind.RFC822_TEXT, FetchKind.BODY_SECTION}
)
_FLAGS = FetchAtt(FetchKind.FLAGS)
_UID = FetchAtt(FetchKind.UID)


def _item(att: FetchAtt, meta: MessageMeta, content: bytes | None) -> bytes:
    kind = att.kind
    if kind is FetchKind.FLAGS:
        return b"FLAGS " + response.flag_list(meta.flags)
    if kind is FetchKind.UID:
        return b"UID %d" % meta.uid
    if kind is FetchKind.RFC822_SIZE:
        return b"RFC822.SIZE %d" % meta.size
    if kind is FetchKind.INTERNALDATE:
        return b"INTERNALDATE " + response.internal_date(meta.internal_date)
    assert content is not None
    if kind is FetchKind.RFC822:
        data = content
    elif kind is FetchKind.RFC822_HEADER:
        data = split(content)[0]
    elif kind is FetchKind.RFC822_TEXT:
        data = split(content)[1]
    else:
        data = partial(section_bytes(content, att.section), att.partial)
    # Message data always as a literal: it may hold anything (RFC 9051 §4.3).
    return att.response_name().encode() + b" " + response.literal(data)


@handles(Fetch, SELECTED)
async def fetch(session: Session, cmd: Fetch) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    for att in cmd.attributes:
        if att.kind in _NOT_YET:
            return no(f"FETCH {att.kind.value} is not supported yet", "CANNOT")
    try:
        if cmd.uid:
            # Non-existent UIDs are ignored, not an error (RFC 9051 §6.4.9).
            uids = cmd.sequence.resolve_uids(sel.uids)
        else:
            uids = [sel.uids[seq - 1] for seq in cmd.sequence.resolve_seq(sel.exists)]
    except SequenceError as e:
        return bad(str(e), "CLIENTBUG")
    if not uids:
        return ok("FETCH completed")
    atts = list(dict.fromkeys(cmd.attributes))
    if cmd.uid and _UID not in atts:
        atts.insert(0, _UID)  # UID FETCH responses always carry the UID (RFC 9051 §6.4.9)
    # Fresh metadata from the store: flags may have changed in another session.
    metas = {
        m.uid: m
        for m in await list_messages(session, sel.name, after_uid=uids[0] - 1, up_to_uid=uids[-1])
    }
    present = [u for u in uids if u in metas]
    gone = len(present) < len(uids)

    # Fetching the text without PEEK sets \Seen, and the FLAGS change is reported in the same
    # FETCH response (RFC 9051 §6.4.5). A read-only (EXAMINEd) mailbox stays unchanged.
    seen_set: set[int] = set()
    if not sel.readonly and any(a.sets_seen for a in atts):
        unseen = [u for u in present if "\\Seen" not in metas[u].flags]
        if unseen:
            updated = await session.store.store_flags(
                session.user, sel.name, unseen, FlagsMode.ADD, ["\\Seen"]
            )
            for m in updated:
                metas[m.uid] = m
                seen_set.add(m.uid)
    needs_content = any(a.kind in _CONTENT for a in atts)

    for uid in present:
        seq = sel.seq_of(uid)
        meta = metas[uid]
        if _FLAGS in atts or uid in seen_set:
            sel.record(meta)  # the client is sent these flags: nothing left to report
        content = None
        if needs_content:
            try:
                content = await session.store.get_content(session.user, sel.name, uid)
            except MessageNotFound:
                gone = True
                continue
        try:
            items = [_item(att, meta, content) for att in atts]
        except SectionUnsupported as e:
            return no(str(e), "CANNOT")
        if uid in seen_set and _FLAGS not in atts:
            items.append(_item(_FLAGS, meta, None))
        await session.send(b"* %d FETCH (" % (seq or 0) + b" ".join(items) + b")\r\n")
    if gone and not cmd.uid:
        # RFC 9051 §7.1: some messages were expunged; the client learns which at the next NOOP.
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")
