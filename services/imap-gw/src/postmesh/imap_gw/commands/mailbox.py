"""LIST/LSUB and STATUS (SELECT/EXAMINE, CLOSE and UNSELECT are in select.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from postmesh.common.logging import get_logger
from postmesh.imap_gw.backend import MailboxInfo, MailboxNotFound
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.commands.sync import list_messages
from postmesh.imap_gw.parser.commands import ListCmd, Lsub, Status
from postmesh.imap_gw.session import DELIMITER, MailboxNameError, Result, Session, bad, no, ok

log = get_logger(__name__)


def _nonexistent(name: str) -> Result:
    return no(f"Mailbox does not exist: {name}", "NONEXISTENT")


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
