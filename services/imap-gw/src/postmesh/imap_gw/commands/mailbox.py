"""SELECT/EXAMINE, LIST/LSUB, STATUS, CLOSE and UNSELECT."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw.backend import MailboxInfo, MailboxNotFound
from postmesh.imap_gw.commands import AUTHENTICATED, SELECTED, handles
from postmesh.imap_gw.commands.sync import list_messages
from postmesh.imap_gw.parser.commands import Close, Examine, ListCmd, Lsub, Select, Status, Unselect
from postmesh.imap_gw.response import flag_list
from postmesh.imap_gw.session import DELIMITER, MailboxNameError, Result, Session, bad, no, ok
from postmesh.imap_gw.state import SYSTEM_FLAGS, SelectedMailbox, State

log = get_logger(__name__)


def _nonexistent(name: str) -> Result:
    return no(f"Mailbox does not exist: {name}", "NONEXISTENT")


@handles(Select, AUTHENTICATED)
async def select(session: Session, cmd: Select) -> Result:
    assert session.user is not None
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    if session.selected is not None:
        # RFC 9051 §6.3.2: the old mailbox is closed (without expunge) even if this one fails.
        session.selected = None
        session.state = State.AUTHENTICATED
        await session.untagged("OK [CLOSED] Previous mailbox closed")
    try:
        info = await session.store.get_mailbox(session.user, name)
        messages = await list_messages(session, name)
    except MailboxNotFound:
        return _nonexistent(name)
    sel = SelectedMailbox(name=name, info=info, readonly=cmd.readonly)
    sel.append(messages)
    flags = [*SYSTEM_FLAGS, *sel.keywords()]
    await session.untagged(b"FLAGS " + flag_list(flags))
    await session.untagged(f"{sel.exists} EXISTS")
    if not session.rev2:
        # IMAP4rev1 (RFC 3501 §6.3.1) requires RECENT; we keep no \Recent state.
        await session.untagged("0 RECENT")
        first_unseen = next(
            (i + 1 for i, uid in enumerate(sel.uids) if "\\Seen" not in sel.meta[uid].flags), None
        )
        if first_unseen is not None:
            await session.untagged(f"OK [UNSEEN {first_unseen}] First unseen message")
    await session.untagged(f"OK [UIDVALIDITY {info.uidvalidity}] UIDs valid")
    uidnext = max(info.uidnext, (sel.uids[-1] + 1) if sel.uids else 1)
    await session.untagged(f"OK [UIDNEXT {uidnext}] Predicted next UID")
    permanent = "()" if cmd.readonly else "(" + " ".join([*SYSTEM_FLAGS, "\\*"]) + ")"
    await session.untagged(f"OK [PERMANENTFLAGS {permanent}] Flags permitted")
    if session.rev2:
        # RFC 9051 §6.3.2: the server MUST return a LIST response with the mailbox name.
        await session.untagged(b'LIST () "/" ' + session.encode_mailbox(name))
    session.selected = sel
    session.state = State.SELECTED
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
    session.selected = None
    session.state = State.AUTHENTICATED
    if not sel.readonly:
        # CLOSE expunges \Deleted messages silently (RFC 9051 §6.4.1).
        try:
            await session.store.expunge(session.user, sel.name)
        except MailboxNotFound:
            pass
    return ok("CLOSE completed")


@handles(Unselect, SELECTED)
async def unselect(session: Session, cmd: Unselect) -> Result:
    session.selected = None
    session.state = State.AUTHENTICATED
    return ok("UNSELECT completed")


# -- LIST ------------------------------------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the hierarchy delimiter (RFC 9051 §6.3.9)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _matches(regexes: Sequence[re.Pattern[str]], name: str) -> bool:
    for rx in regexes:
        if rx.fullmatch(name):
            return True
        # INBOX is case-insensitive (RFC 9051 §5.1).
        if name == "INBOX" and re.fullmatch(rx.pattern, name, re.IGNORECASE | re.DOTALL):
            return True
    return False


_SPECIAL_USE = {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}


def _tree(mailboxes: Iterable[MailboxInfo]) -> tuple[dict[str, MailboxInfo], set[str], set[str]]:
    """Existing mailboxes by name, names that only exist as parents, and names with children."""
    existing = {m.name: m for m in mailboxes}
    implied: set[str] = set()
    parents: set[str] = set()
    for name in existing:
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):
            parent = DELIMITER.join(parts[:i])
            parents.add(parent)
            if parent not in existing:
                implied.add(parent)
    return existing, implied, parents


async def _list(
    session: Session,
    verb: str,
    reference: bytes,
    patterns: Sequence[bytes],
    *,
    subscribed_only: bool,
    show_subscribed: bool,
) -> Result:
    assert session.user is not None
    try:
        ref = session.decode_mailbox(reference) if reference else ""
        pats = [session.decode_mailbox(p) if p else "" for p in patterns]
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    if pats == [""]:
        # RFC 9051 §6.3.9: an empty pattern asks for the delimiter and root of the reference.
        root = ref.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in ref else ""
        await session.untagged(
            f'{verb} (\\Noselect) "{DELIMITER}" '.encode() + session.encode_mailbox(root)
        )
        return ok(f"{verb} completed")
    regexes = [pattern_regex(ref + p) for p in pats if p]
    existing, implied, parents = _tree(await session.store.list_mailboxes(session.user))
    for name in sorted(set(existing) | implied, key=lambda n: (n != "INBOX", n)):
        info = existing.get(name)
        if subscribed_only and (info is None or not info.subscribed):
            continue
        if not _matches(regexes, name):
            continue
        attrs: list[str] = []
        if info is None:
            attrs.append("\\Noselect")
        attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if info is not None:
            if info.special_use in _SPECIAL_USE:
                attrs.append(info.special_use)
            if show_subscribed and info.subscribed:
                attrs.append("\\Subscribed")
        await session.untagged(
            f'{verb} ({" ".join(attrs)}) "{DELIMITER}" '.encode() + session.encode_mailbox(name)
        )
    return ok(f"{verb} completed")


@handles(ListCmd, AUTHENTICATED)
async def list_(session: Session, cmd: ListCmd) -> Result:
    for opt in cmd.selection:
        if opt not in ("SUBSCRIBED", "RECURSIVEMATCH"):
            return bad(f"Unsupported LIST selection option {opt}")
    for opt in cmd.returns:
        if opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
            return bad(f"Unsupported LIST return option {opt}")
    if "RECURSIVEMATCH" in cmd.selection and "SUBSCRIBED" not in cmd.selection:
        return bad("RECURSIVEMATCH requires another selection option")  # RFC 5258 §3.1
    subscribed = "SUBSCRIBED" in cmd.selection
    return await _list(
        session,
        "LIST",
        cmd.reference,
        cmd.patterns,
        subscribed_only=subscribed,
        show_subscribed=subscribed or "SUBSCRIBED" in cmd.returns,
    )


@handles(Lsub, AUTHENTICATED)
async def lsub(session: Session, cmd: Lsub) -> Result:
    return await _list(
        session,
        "LSUB",
        cmd.reference,
        [cmd.pattern],
        subscribed_only=True,
        show_subscribed=False,
    )


# -- STATUS ----------------------------------------------------------------------------------------

_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT", "DELETED", "SIZE")


@handles(Status, AUTHENTICATED)
async def status(session: Session, cmd: Status) -> Result:
    assert session.user is not None
    for item in cmd.items:
        if item not in _STATUS_ITEMS:
            return bad(f"Unknown STATUS item {item}")
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    try:
        info = await session.store.get_mailbox(session.user, name)
        metas = await list_messages(session, name) if {"DELETED", "SIZE"} & set(cmd.items) else []
    except MailboxNotFound:
        return _nonexistent(name)
    values = {
        "MESSAGES": info.messages,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": info.unseen,
        "RECENT": 0,
        "DELETED": sum(1 for m in metas if "\\Deleted" in m.flags),
        "SIZE": sum(m.size for m in metas),
    }
    items = " ".join(f"{item} {values[item]}" for item in dict.fromkeys(cmd.items))
    await session.untagged(b"STATUS " + session.encode_mailbox(name) + f" ({items})".encode())
    return ok("STATUS completed")
