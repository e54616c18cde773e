"""Loading the selected mailbox's messages and reporting changes to the client."""

from __future__ import annotations

from postmesh.imap_gw.backend import MessageMeta
from postmesh.imap_gw.session import Session


async def list_messages(
    session: Session, mailbox: str, after_uid: int = 0, up_to_uid: int | None = None
) -> list[MessageMeta]:
    """Messages with after_uid < UID (<= up_to_uid), page by page in ascending UID order."""
    assert session.user is not None
    out: list[MessageMeta] = []
    limit = session.settings.imap_list_page_size
    while True:
        page = await session.store.list_messages(session.user, mailbox, after_uid, limit)
        for m in page.messages:
            if up_to_uid is not None and m.uid > up_to_uid:
                return out
            out.append(m)
        if not page.more or not page.messages:
            return out
        after_uid = page.messages[-1].uid


async def poll_selected(session: Session) -> None:
    """Tell the client about messages expunged or delivered since it last heard: EXPUNGE, then
    EXISTS (RFC 9051 §7.4.1, §7.3.1). Until IDLE via mailbox events exists, this is the NOOP path.
    """
    sel = session.selected
    assert sel is not None and session.user is not None
    info = await session.store.get_mailbox(session.user, sel.name)
    last = sel.uids[-1] if sel.uids else 0
    new = await list_messages(session, sel.name, after_uid=last) if info.uidnext > last + 1 else []
    if info.messages != sel.exists + len(new):
        # Some message went away: find which by listing what we know.
        current = {m.uid for m in await list_messages(session, sel.name, up_to_uid=last)}
        # Highest first, so each number is still the one the client has (RFC 9051 §7.4.1).
        for uid in reversed([u for u in sel.uids if u not in current]):
            seq = sel.remove(uid)
            await session.untagged(f"{seq} EXPUNGE")
    if new:
        sel.append(new)
        await session.untagged(f"{sel.exists} EXISTS")
    sel.info = info
