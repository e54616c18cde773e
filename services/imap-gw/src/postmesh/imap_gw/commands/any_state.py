"""CAPABILITY, NOOP/CHECK, LOGOUT (any state), ENABLE and NAMESPACE."""

from __future__ import annotations

from postmesh.imap_gw.commands import ANY, AUTHENTICATED, SELECTED, handles
from postmesh.imap_gw.commands.sync import poll_selected
from postmesh.imap_gw.parser.commands import Capability, Check, Enable, Logout, Namespace, Noop
from postmesh.imap_gw.session import DELIMITER, Result, Session, bad, ok
from postmesh.imap_gw.state import State


@handles(Capability, ANY)
async def capability(session: Session, cmd: Capability) -> Result:
    await session.untagged("CAPABILITY " + " ".join(session.capabilities()))
    return ok("CAPABILITY completed")


@handles(Noop, ANY)
async def noop(session: Session, cmd: Noop) -> Result:
    # NOOP is how a client without IDLE polls: report new and expunged messages (RFC 9051 §6.1.2).
    if session.state is State.SELECTED:
        await poll_selected(session)
    return ok("NOOP completed")


@handles(Check, SELECTED)
async def check(session: Session, cmd: Check) -> Result:
    await poll_selected(session)
    return ok("CHECK completed")


@handles(Logout, ANY)
async def logout(session: Session, cmd: Logout) -> Result:
    await session.untagged("BYE Logging out")
    session.state = State.LOGOUT
    return ok("LOGOUT completed")


@handles(Enable, AUTHENTICATED)
async def enable(session: Session, cmd: Enable) -> Result:
    # RFC 5161 §3.1 / RFC 9051 §6.3.1: only before a mailbox is selected; unknown names ignored.
    if session.state is State.SELECTED:
        return bad("ENABLE is only valid before a mailbox is selected")
    enabled: list[str] = []
    if "IMAP4REV2" in cmd.capabilities and not session.rev2:
        session.rev2 = True
        enabled.append("IMAP4rev2")
    if "UTF8=ACCEPT" in cmd.capabilities and not session.utf8:
        session.utf8 = True  # RFC 6855 §3
        enabled.append("UTF8=ACCEPT")
    if "CONDSTORE" in cmd.capabilities and not session.condstore:
        session.condstore = True  # RFC 7162 §3.1
        enabled.append("CONDSTORE")
    if "QRESYNC" in cmd.capabilities and not session.qresync:
        # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
        session.qresync = session.condstore = True
        enabled.append("QRESYNC")
    await session.untagged(" ".join(["ENABLED", *enabled]))
    return ok("ENABLE completed")


@handles(Namespace, AUTHENTICATED)
async def namespace(session: Session, cmd: Namespace) -> Result:
    # One personal namespace, no shared or other users' ones (RFC 2342).
    await session.untagged(f'NAMESPACE (("" "{DELIMITER}")) NIL NIL')
    return ok("NAMESPACE completed")
