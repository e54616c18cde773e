"""LIST (with LIST-EXTENDED, LIST-STATUS and SPECIAL-USE), LSUB and STATUS.

SELECT/EXAMINE, CLOSE and UNSELECT are in select.py; CREATE, DELETE, RENAME and the
subscriptions in manage.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from postmesh.common.logging import get_logger
from postmesh.imap_gw.backend import MailboxInfo, MailboxNotFound, MailboxTree
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.parser.commands import ListCmd, Lsub, Status
from postmesh.imap_gw.session import DELIMITER, MailboxNameError, Result, Session, bad, no, ok

log = get_logger(__name__)

# RFC 6154 §2: the special-use attributes a mailbox may carry (the store keeps one each).
SPECIAL_USE = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)

# RFC 5258 §3.1 selection options (REMOTE: we have no remote mailboxes, so it changes nothing)
# and RFC 6154 §3's SPECIAL-USE one.
_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
# RFC 5258 §3.2, RFC 5819 (STATUS), RFC 6154 §3 (SPECIAL-USE).
_RETURNS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})

# RFC 9051 §6.3.11 items, RFC 8438 SIZE, RFC 7162 §3.1.9 HIGHESTMODSEQ; RECENT is IMAP4rev1's.
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ")
_REV1_STATUS_ITEMS = ("RECENT",)


def _nonexistent(name: str) -> Result:
    return no(f"Mailbox does not exist: {name}", "NONEXISTENT")


# -- patterns --------------------------------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the hierarchy delimiter (RFC 9051 §6.3.9);
    INBOX (and INBOX/...) matches case-insensitively (RFC 9051 §5.1)."""
    out = []
    if pattern.upper().startswith("INBOX") and (
        len(pattern) == 5 or pattern[5] in (DELIMITER, "*", "%")
    ):
        pattern = "INBOX" + pattern[5:]
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
        # INBOX is case-insensitive (RFC 9051 §5.1): "in*" finds it too.
        if name == "INBOX" and re.fullmatch(rx.pattern, name, re.IGNORECASE | re.DOTALL):
            return True
    return False


def _ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


# -- the mailbox tree as LIST sees it --------------------------------------------------------------


@dataclass
class _Tree:
    """Existing mailboxes (store \\Noselect parents and parents implied by a child included),
    the subscribed names, and which names have existing inferiors."""

    mailboxes: dict[str, MailboxInfo | None]  # None: a parent only implied by its children
    subscribed: set[str]
    parents: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, listing: MailboxTree) -> _Tree:
        boxes: dict[str, MailboxInfo | None] = {m.name: m for m in listing.mailboxes}
        parents: set[str] = set()
        for name in list(boxes):
            for parent in _ancestors(name):
                parents.add(parent)
                boxes.setdefault(parent, None)
        subscribed = set(listing.subscriptions) | {
            m.name for m in listing.mailboxes if m.subscribed
        }
        return cls(boxes, subscribed, parents)

    def selectable(self, name: str) -> MailboxInfo | None:
        info = self.mailboxes.get(name)
        return info if info is not None and not info.noselect else None


def _order(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "INBOX", not n.startswith("INBOX" + DELIMITER), n))


# -- STATUS values (STATUS and LIST RETURN (STATUS ...)) -------------------------------------------


def status_items(session: Session, items: Sequence[str]) -> str | None:
    """The first item that is not a STATUS item for this session, or None."""
    known = STATUS_ITEMS if session.rev2 else STATUS_ITEMS + _REV1_STATUS_ITEMS
    for item in items:
        if item not in known:
            return item
    return None


def status_line(session: Session, info: MailboxInfo, items: Sequence[str]) -> bytes:
    values = {
        "MESSAGES": info.messages,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": info.unseen,
        "RECENT": info.recent,  # unclaimed by any session (IMAP4rev1 only, RFC 3501 §6.3.10)
        "DELETED": info.deleted,
        "SIZE": info.size,
        "HIGHESTMODSEQ": info.highestmodseq,
    }
    body = " ".join(f"{item} {values[item]}" for item in dict.fromkeys(items))
    return b"STATUS " + session.encode_mailbox(info.name) + f" ({body})".encode()


# -- LIST ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ListRequest:
    verb: str
    regexes: Sequence[re.Pattern[str]]
    subscribed_only: bool = False
    special_use_only: bool = False
    recursive: bool = False
    show_subscribed: bool = False
    status: Sequence[str] = ()


def _attributes(tree: _Tree, req: _ListRequest, name: str) -> list[str]:
    info = tree.mailboxes.get(name)
    attrs: list[str] = []
    if name not in tree.mailboxes:
        # Only a subscription (or an ancestor of one): RFC 5258 §3.4 (implies \Noselect).
        attrs.append("\\NonExistent")
    else:
        if info is None or info.noselect:
            attrs.append("\\Noselect")
        # RFC 5258 §4 / RFC 9051 §7.3.1: sent always, it costs nothing here.
        attrs.append("\\HasChildren" if name in tree.parents else "\\HasNoChildren")
        if info is not None and not info.noselect and info.special_use in SPECIAL_USE:
            attrs.append(info.special_use)
    if req.show_subscribed and name in tree.subscribed:
        attrs.append("\\Subscribed")
    return attrs


def _selected(tree: _Tree, req: _ListRequest) -> tuple[list[str], set[str]]:
    """The names to list and, under RECURSIVEMATCH, those that get CHILDINFO (RFC 5258 §3.5:
    a matching name with a descendant that meets the selection criteria)."""
    if req.subscribed_only:
        candidates: set[str] = set(tree.subscribed)
    else:
        candidates = set(tree.mailboxes)
    if req.special_use_only:
        candidates = {
            n for n in candidates if (i := tree.selectable(n)) is not None and i.special_use
        }
    listed = {n for n in candidates if _matches(req.regexes, n)}
    childinfo: set[str] = set()
    if req.recursive:
        for name in candidates:
            for parent in _ancestors(name):
                if _matches(req.regexes, parent):
                    childinfo.add(parent)
        listed |= childinfo
    return _order(listed), childinfo


async def _list(session: Session, req: _ListRequest, tree: _Tree) -> None:
    out: list[bytes] = []
    names, childinfo = _selected(tree, req)
    for name in names:
        attrs = _attributes(tree, req, name)
        line = (
            b"* "
            + f'{req.verb} ({" ".join(attrs)}) "{DELIMITER}" '.encode()
            + session.encode_mailbox(name)
        )
        if name in childinfo:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        out.append(line + b"\r\n")
        info = tree.selectable(name)
        if req.status and info is not None:
            # RFC 5819 §2: the STATUS response follows its LIST response.
            out.append(b"* " + status_line(session, info, req.status) + b"\r\n")
    if out:
        await session.send(b"".join(out))


def _decode_patterns(
    session: Session, reference: bytes, patterns: Sequence[bytes]
) -> tuple[str, list[str]]:
    ref = session.decode_mailbox(reference) if reference else ""
    return ref, [session.decode_mailbox(p) if p else "" for p in patterns]


async def _hierarchy_root(session: Session, verb: str, ref: str) -> Result:
    """RFC 9051 §6.3.9: an empty pattern asks for the delimiter and the reference's root."""
    root = ref.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in ref else ""
    await session.untagged(
        f'{verb} (\\Noselect) "{DELIMITER}" '.encode() + session.encode_mailbox(root)
    )
    return ok(f"{verb} completed")


@handles(ListCmd, AUTHENTICATED)
async def list_(session: Session, cmd: ListCmd) -> Result:
    assert session.user is not None
    for opt in cmd.selection:
        if opt not in _SELECTION:
            return bad(f"Unsupported LIST selection option {opt}")  # RFC 5258 §3
    for opt in cmd.returns:
        if opt not in _RETURNS:
            return bad(f"Unsupported LIST return option {opt}")
    if "RECURSIVEMATCH" in cmd.selection and not set(cmd.selection) - {"RECURSIVEMATCH", "REMOTE"}:
        return bad("RECURSIVEMATCH requires another selection option")  # RFC 5258 §3.1
    if cmd.status:
        unknown = status_items(session, cmd.status)
        if unknown is not None:
            return bad(f"Unknown STATUS item {unknown}")
        if "HIGHESTMODSEQ" in cmd.status:
            session.condstore = True  # a CONDSTORE-enabling command (RFC 7162 §3.1)
    try:
        ref, pats = _decode_patterns(session, cmd.reference, cmd.patterns)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    if pats == [""] and not cmd.selection:
        return await _hierarchy_root(session, "LIST", ref)
    subscribed = "SUBSCRIBED" in cmd.selection
    req = _ListRequest(
        "LIST",
        [pattern_regex(ref + p) for p in pats if p],
        subscribed_only=subscribed,
        special_use_only="SPECIAL-USE" in cmd.selection,
        recursive="RECURSIVEMATCH" in cmd.selection,
        show_subscribed=subscribed or "SUBSCRIBED" in cmd.returns,
        status=cmd.status,
    )
    tree = _Tree.of(await session.store.list_mailbox_tree(session.user))
    await _list(session, req, tree)
    return ok("LIST completed")


@handles(Lsub, AUTHENTICATED)
async def lsub(session: Session, cmd: Lsub) -> Result:
    """IMAP4rev1 LSUB (RFC 3501 §6.3.9): subscribed names; a parent that ``%`` stops at but
    that is not subscribed itself is listed \\Noselect."""
    assert session.user is not None
    try:
        ref, pats = _decode_patterns(session, cmd.reference, [cmd.pattern])
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    if pats == [""]:
        return await _hierarchy_root(session, "LSUB", ref)
    regexes = [pattern_regex(ref + p) for p in pats]
    req = _ListRequest("LSUB", regexes)
    tree = _Tree.of(await session.store.list_mailbox_tree(session.user))
    listed = {n for n in tree.subscribed if _matches(regexes, n)}
    # Only where the pattern stops above a subscribed name ("%"), not where it lists the
    # name itself ("*"), as Dovecot does.
    implied = {
        p
        for n in tree.subscribed - listed
        for p in _ancestors(n)
        if p not in tree.subscribed and _matches(regexes, p)
    }
    out = []
    for name in _order(listed | implied):
        # \NonExistent is not IMAP4rev1's: a name LSUB lists but that cannot be selected
        # (gone, a bare parent, or unsubscribed above a subscribed child) is \Noselect.
        attrs = [a for a in _attributes(tree, req, name) if a != "\\NonExistent"]
        if (name not in listed or tree.selectable(name) is None) and "\\Noselect" not in attrs:
            attrs.insert(0, "\\Noselect")
        out.append(
            b"* "
            + f'LSUB ({" ".join(attrs)}) "{DELIMITER}" '.encode()
            + session.encode_mailbox(name)
            + b"\r\n"
        )
    if out:
        await session.send(b"".join(out))
    return ok("LSUB completed")


# -- STATUS ----------------------------------------------------------------------------------------


@handles(Status, AUTHENTICATED)
async def status(session: Session, cmd: Status) -> Result:
    assert session.user is not None
    unknown = status_items(session, cmd.items)
    if unknown is not None:
        return bad(f"Unknown STATUS item {unknown}")
    try:
        name = session.decode_mailbox(cmd.mailbox)
    except MailboxNameError as e:
        return bad(f"Invalid mailbox name: {e}")
    try:
        info = await session.store.get_mailbox(session.user, name)
    except MailboxNotFound:
        return _nonexistent(name)
    if info.noselect:
        return no(f"Mailbox is not selectable: {name}", "NONEXISTENT")
    if "HIGHESTMODSEQ" in cmd.items:
        session.condstore = True  # a CONDSTORE-enabling command (RFC 7162 §3.1)
    await session.untagged(status_line(session, info, cmd.items))
    return ok("STATUS completed")
