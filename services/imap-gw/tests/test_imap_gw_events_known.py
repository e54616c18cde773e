"""A FLAGS_CHANGED event that the selected mailbox's model already reflects (the session's own
STORE coming back from the bus) does not make the session ask the store again; any other event
does."""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from imap_wire import USER, Client

from postmesh.api.events.v1 import events_pb2
from postmesh.imap_gw.backend import FlagPage, MessageMeta
from postmesh.imap_gw.state import SelectedMailbox

if TYPE_CHECKING:
    from conftest import Env

Kind = events_pb2.MailboxEvent.Kind


def _model() -> SelectedMailbox:
    sel = SelectedMailbox("INBOX", 1, readonly=False, highestmodseq=10)
    sel.load(
        FlagPage(array("I", [1, 2, 3]), array("Q", [4, 5, 6]), [0, 1, 0], [(), ("\\Seen",)], False)
    )
    return sel


def test_knows_flags() -> None:
    sel = _model()
    assert sel.knows_flags([2], ["\\Seen"], 5)
    assert sel.knows_flags([2], ["\\Seen"], 3)  # an older change, since superseded
    assert not sel.knows_flags([2], ["\\Seen"], 7)  # a later change, even to the same flags
    assert not sel.knows_flags([1, 2], ["\\Seen"], 5)  # 1 has other flags
    assert not sel.knows_flags([9], [], 1)  # not in the map: perhaps a new message
    sel.record(MessageMeta(3, ("\\Flagged", "\\Seen"), 100, 0, 12))  # this session's STORE
    assert sel.knows_flags([3], ["\\Seen", "\\Flagged"], 12)
    sel.mark_expunged([3])
    assert not sel.knows_flags([3], ["\\Seen", "\\Flagged"], 12)


async def test_own_store_event_needs_no_resync(env: Env) -> None:
    env.store.on_change = None  # only the events below tell the session anything
    c = await Client.selected(env)
    await c.cmd(b"s STORE 2 +FLAGS (\\Flagged)")
    session = next(iter(env.server.registry.sessions(USER)))
    sel = session.selected
    assert sel is not None and not sel.dirty
    flags, modseq = sel.flags_of(2), sel.modseq_of(2)

    def event(flags: list[str], modseq: int) -> events_pb2.MailboxEvent:
        return events_pb2.MailboxEvent(
            user=USER, mailbox="INBOX", kind=Kind.KIND_FLAGS_CHANGED, uids=[2],
            flags=flags, modseq=modseq,
        )  # fmt: skip

    env.server.registry.handle_event(event(list(flags), modseq))
    assert not sel.dirty
    env.server.registry.handle_event(event(["\\Deleted"], modseq + 1))
    assert sel.dirty
    c.writer.close()
