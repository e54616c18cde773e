"""A FLAGS_CHANGED or MESSAGE_NEW event that the selected mailbox's model already reflects (the
session's own STORE or APPEND coming back from the bus) does not make the session ask the store
again; any other event does. An APPEND whose answer follows the model's HIGHESTMODSEQ directly
needs no GetChanges at all (ADR 0064)."""

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
MSG = b"Subject: appended\r\n\r\nbody\r\n"


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


def test_appended_records_the_new_message_only_right_after_the_model() -> None:
    sel = _model()  # HIGHESTMODSEQ 10, UIDs 1-3
    assert not sel.appended(1, 4, ["\\Seen"], 12)  # 11 went to a change the model lacks
    assert not sel.appended(2, 4, ["\\Seen"], 11)  # another UIDVALIDITY: recreated
    assert not sel.appended(1, 3, ["\\Seen"], 11)  # not above the UIDs the model holds
    assert sel.highestmodseq == 10 and not sel.has_pending
    assert sel.appended(1, 4, ["\\Seen", "$Work"], 11)
    assert sel.highestmodseq == 11 and sel.knows_message([4], 11)
    assert not sel.knows_message([4], 12) and not sel.knows_message([5], 11)
    assert not sel.flags_announced  # a new keyword: FLAGS goes out with the EXISTS
    assert sel.take_new() == 4 and sel.flags_of(4) == ("\\Seen", "$Work")
    assert sel.knows_message([4], 11)  # announced now, at the same MODSEQ
    sel.mark_expunged([4])
    assert sel.take_expunged() == [(4, 4)] and not sel.knows_message([4], 11)
    empty = SelectedMailbox("INBOX", 1, readonly=False)  # no MODSEQs known: never
    assert not empty.appended(1, 1, [], 1)


def _new_event(uid: int, modseq: int) -> events_pb2.MailboxEvent:
    return events_pb2.MailboxEvent(
        user=USER, mailbox="INBOX", kind=Kind.KIND_MESSAGE_NEW, uids=[uid], modseq=modseq
    )


async def test_own_append_to_the_selected_mailbox_needs_no_resync(env: Env) -> None:
    c = await Client.selected(env)
    before = len(env.mail.made("get_changes"))
    await c.send(b"a APPEND INBOX {%d+}\r\n" % len(MSG) + MSG)
    uidvalidity = await env.uidvalidity()
    assert await c.line() == b"* 4 EXISTS"
    assert await c.line() == b"* 1 RECENT"  # claimed in the store's write, no second call
    assert await c.line() == b"a OK [APPENDUID %d 4] APPEND completed" % uidvalidity
    assert len(env.mail.made("get_changes")) == before  # the answer said it all
    session = next(iter(env.server.registry.sessions(USER)))
    sel = session.selected
    assert sel is not None and not sel.dirty
    # Its own MESSAGE_NEW coming back from the bus tells the session nothing new...
    env.server.registry.handle_event(_new_event(4, sel.modseq_of(4)))
    assert not sel.dirty
    # ... another message's does.
    env.server.registry.handle_event(_new_event(5, sel.modseq_of(4) + 1))
    assert sel.dirty
    assert (await c.cmd(b"f UID FETCH 4 (FLAGS)"))[0] == b"* 4 FETCH (UID 4 FLAGS (\\Recent))"
    assert not env.mail.made("claim_recent")[1:]  # SELECT's claim only
    await c.close()


async def test_append_after_an_unannounced_change_asks_the_store(env: Env) -> None:
    c = await Client.selected(env)
    await env.add(env.make_message("from elsewhere"))  # no event: the session does not know
    before = len(env.mail.made("get_changes"))
    await c.send(b"a APPEND INBOX (\\seen) {%d+}\r\n" % len(MSG) + MSG)
    assert await c.line() == b"* 5 EXISTS"  # both the delivery and the APPEND
    assert await c.line() == b"* 2 RECENT"  # this session is the first told of both
    assert (await c.line()).startswith(b"a OK [APPENDUID ")
    assert len(env.mail.made("get_changes")) == before + 1
    reply = await c.cmd(b"f FETCH 4:5 (UID FLAGS)")
    assert reply[:2] == [
        b"* 4 FETCH (UID 4 FLAGS (\\Recent))",
        b"* 5 FETCH (UID 5 FLAGS (\\Seen \\Recent))",
    ]
    await c.close()
