"""CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE (RFC 9051 §6.3.4-8, RFC 6154 §3)."""

from __future__ import annotations

from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw.backend import (
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxRejected,
)
from postmesh.imap_gw.commands import AUTHENTICATED, handles
from postmesh.imap_gw.parser.mailbox import Create, Delete, Rename, Subscribe, Unsubscribe
from postmesh.imap_gw.session import DELIMITER, MailboxNameError, Result, Session, bad, no, ok

log = get_logger(__name__)

# RFC 6154 §2 attributes CREATE ... USE accepts: \All and \Flagged would promise virtual
# mailboxes the store does not build (RFC 6154 §3: NO [USEATTR]).
_CREATE_USES = {u.lower(): u for u in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")}


class _NameError(Exception):
    def __init__(self, result: Result) -> None:
        self.result = result


def _name(session: Session, raw: bytes, *, new: bool = False) -> str:
    """The store name of a client's mailbox argument. A new name may end with the delimiter,
    which is dropped (RFC 9051 §6.3.4)."""
    try:
        name = session.decode_mailbox(raw)
    except MailboxNameError as e:
        raise _NameError(bad(f"Invalid mailbox name: {e}")) from e
    if new:
        name = name.rstrip(DELIMITER)
    if not name:
        raise _NameError(no("Empty mailbox name", "CANNOT"))
    return name


def _exists(name: str) -> Result:
    return no(f"Mailbox already exists: {name}", "ALREADYEXISTS")


def _nonexistent(name: str) -> Result:
    return no(f"Mailbox does not exist: {name}", "NONEXISTENT")


@handles(Create, AUTHENTICATED)
async def create(session: Session, cmd: Create) -> Result:
    assert session.user is not None
    try:
        name = _name(session, cmd.mailbox, new=True)
    except _NameError as e:
        return e.result
    if name == "INBOX":
        return _exists(name)  # RFC 9051 §6.3.4: creating INBOX is an error
    for use in cmd.special_use:
        if use.lower() not in _CREATE_USES:
            return no(f"Special-use attribute {use} is not supported", "USEATTR")
    if len(cmd.special_use) > 1:
        return no("A mailbox can have one special-use attribute", "USEATTR")
    special_use = _CREATE_USES[cmd.special_use[0].lower()] if cmd.special_use else ""
    try:
        await session.store.create_mailbox(session.user, name, special_use)
    except MailboxExists:
        return _exists(name)
    except MailboxRejected as e:
        return no(f"Cannot create mailbox: {e}", "CANNOT")
    log.info("mailbox created", extra=kv(mailbox=name, special_use=",".join(cmd.special_use)))
    return ok("CREATE completed")


@handles(Delete, AUTHENTICATED)
async def delete(session: Session, cmd: Delete) -> Result:
    assert session.user is not None
    try:
        name = _name(session, cmd.mailbox)
    except _NameError as e:
        return e.result
    if name == "INBOX":
        return no("INBOX cannot be deleted", "CANNOT")  # RFC 9051 §6.3.5
    try:
        messages = await session.store.delete_mailbox(session.user, name)
    except MailboxNotFound:
        return _nonexistent(name)
    except MailboxHasChildren:
        # RFC 9051 §6.3.5: a \Noselect name with inferiors cannot be deleted.
        return no(f"Mailbox has inferior mailboxes: {name}", "HASCHILDREN")
    except MailboxRejected as e:
        return no(f"Cannot delete mailbox: {e}", "CANNOT")
    sel = session.selected
    if sel is not None and sel.name == name:
        # Deleting the selected mailbox closes it (as Dovecot does): the session is back in
        # the authenticated state, told so by [CLOSED] (RFC 9051 §7.1).
        session.deselect()
        await session.untagged("OK [CLOSED] Selected mailbox deleted")
    log.info("mailbox deleted", extra=kv(mailbox=name, messages=messages))
    return ok("DELETE completed")


@handles(Rename, AUTHENTICATED)
async def rename(session: Session, cmd: Rename) -> Result:
    assert session.user is not None
    try:
        old = _name(session, cmd.mailbox)
        new = _name(session, cmd.new_name, new=True)
    except _NameError as e:
        return e.result
    try:
        await session.store.rename_mailbox(session.user, old, new)
    except MailboxNotFound:
        return _nonexistent(old)
    except MailboxExists:
        return _exists(new)
    except MailboxRejected as e:
        return no(f"Cannot rename mailbox: {e}", "CANNOT")
    sel = session.selected
    if sel is not None:
        if old == "INBOX" and sel.name == "INBOX":
            # INBOX stays, emptied (RFC 9051 §6.3.6): report the expunges now.
            sel.dirty = True
        elif sel.name == old or sel.name.startswith(old + DELIMITER):
            # Renamed under us: same messages and UIDs, new name (the store's rename event
            # may arrive later; it then finds the new name already in place).
            sel.name = new + sel.name[len(old) :]
    log.info("mailbox renamed", extra=kv(mailbox=old, new_name=new))
    return ok("RENAME completed")


@handles(Subscribe, AUTHENTICATED)
async def subscribe(session: Session, cmd: Subscribe) -> Result:
    assert session.user is not None
    try:
        name = _name(session, cmd.mailbox)
    except _NameError as e:
        return e.result
    # RFC 9051 §6.3.7 lets a server check that the mailbox exists; Dovecot does.
    try:
        await session.store.get_mailbox(session.user, name)
    except MailboxNotFound:
        return _nonexistent(name)
    try:
        await session.store.set_subscription(session.user, name, True)
    except MailboxRejected as e:
        return no(f"Cannot subscribe: {e}", "CANNOT")
    return ok("SUBSCRIBE completed")


@handles(Unsubscribe, AUTHENTICATED)
async def unsubscribe(session: Session, cmd: Unsubscribe) -> Result:
    assert session.user is not None
    try:
        name = _name(session, cmd.mailbox)
    except _NameError as e:
        return e.result
    # No existence check: a subscription may outlive its mailbox (RFC 9051 §6.3.8).
    try:
        await session.store.set_subscription(session.user, name, False)
    except MailboxRejected as e:
        return no(f"Cannot unsubscribe: {e}", "CANNOT")
    return ok("UNSUBSCRIBE completed")
