"""Command handlers, one module per command group, registered with the states they run in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from postmesh.common.backend import BackendUnavailable
from postmesh.common.logging import get_logger, kv
from postmesh.imap_gw.backend import MailboxNotFound
from postmesh.imap_gw.commands.sync import expunge_allowed, flush_updates
from postmesh.imap_gw.parser.commands import Command
from postmesh.imap_gw.response import Status
from postmesh.imap_gw.session import Result, Session, bad, no
from postmesh.imap_gw.state import State

log = get_logger(__name__)

Handler = Callable[[Session, Any], Awaitable[Result]]
C = TypeVar("C", bound=Command)

ANY = frozenset(State)
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

_HANDLERS: dict[type[Command], tuple[frozenset[State], Handler]] = {}


def handles(
    cls: type[C], states: frozenset[State]
) -> Callable[
    [Callable[[Session, C], Awaitable[Result]]], Callable[[Session, C], Awaitable[Result]]
]:
    def register(
        fn: Callable[[Session, C], Awaitable[Result]],
    ) -> Callable[[Session, C], Awaitable[Result]]:
        _HANDLERS[cls] = (states, fn)
        return fn

    return register


_WRONG_STATE = {
    State.NOT_AUTHENTICATED: "Log in first",
    State.AUTHENTICATED: "No mailbox selected",
    State.SELECTED: "Not valid with a mailbox selected",
}


async def dispatch(session: Session, cmd: Command) -> Result:
    entry = _HANDLERS.get(type(cmd))
    if entry is None:
        return bad(f"{cmd.name} is not implemented")
    states, handler = entry
    if session.state not in states:
        if session.state is not State.NOT_AUTHENTICATED and State.NOT_AUTHENTICATED in states:
            return bad("Already authenticated")
        return bad(_WRONG_STATE.get(session.state, "Command not valid in this state"))
    # RFC 5182: "$" in a sequence set is the saved SEARCH result.
    cmd = session.saved_search.expand_in(cmd, session.selected)
    try:
        result = await handler(session, cmd)
        if result.status is not Status.BAD and session.state is State.SELECTED:
            # Untagged updates go out before the tagged response, EXPUNGE only where the
            # command allows it (RFC 9051 §7.5.1).
            await flush_updates(session, expunge_allowed(cmd))
        return result
    except BackendUnavailable as e:
        # Logged where the call failed; the client may retry (RFC 5530 UNAVAILABLE).
        log.warning(
            "command failed: backend unavailable", extra=kv(command=cmd.label, error=str(e))
        )
        return no("Temporary server failure, try again later", "UNAVAILABLE")
    except MailboxNotFound:
        # E.g. the selected mailbox was deleted meanwhile.
        return no("Mailbox does not exist", "NONEXISTENT")


# Registration happens on import.
from postmesh.imap_gw.commands import any_state, auth, fetch, mailbox, search  # noqa: E402

__all__ = ["any_state", "auth", "dispatch", "fetch", "handles", "mailbox", "search"]

# The selected-state commands (registered on import as well).
from postmesh.imap_gw.commands import append, copy, expunge, idle, select, store  # noqa: E402, F401

# isort: split
# Mailbox management, ID and QUOTA (registered on import as well).
from postmesh.imap_gw.commands import id, manage, quota  # noqa: E402, F401

# isort: split
# SORT and THREAD (RFC 5256; registered on import as well).
from postmesh.imap_gw.commands import sort  # noqa: E402, F401
