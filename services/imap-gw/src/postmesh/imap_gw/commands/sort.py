"""SORT, THREAD and their UID forms (RFC 5256 §4; SORT=DISPLAY, RFC 5957).

The session's part: the search criteria are evaluated as SEARCH evaluates them; the matching
messages' metadata (the store's GetMessageMeta for header fields, its listing for the internal
date and size) become :class:`~postmesh.imap_gw.sort_keys.Fields` batch by batch, so a large
mailbox is never held as whole structures; the ordering itself is ``sort_keys`` and
``threads``."""

from __future__ import annotations

from collections.abc import Sequence

from postmesh.imap_gw import response, sort_keys, threads
from postmesh.imap_gw.backend import MessageMeta, MessageStructure, SearchRejected
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.fetch import structures
from postmesh.imap_gw.commands.search import matching
from postmesh.imap_gw.commands.sync import MailboxLost, list_messages
from postmesh.imap_gw.message import header_fields
from postmesh.imap_gw.parser.sort import Sort, SortKey, Thread, ThreadAlgorithm
from postmesh.imap_gw.session import Result, Session, bad, no, ok
from postmesh.imap_gw.state import SelectedMailbox

# Matching messages whose metadata is turned into sort fields at a time.
_BATCH = 2048
_META_KEYS = frozenset({SortKey.ARRIVAL, SortKey.SIZE, SortKey.DATE})
_HEADER_KEYS = frozenset(SortKey) - {SortKey.ARRIVAL, SortKey.SIZE}


def _references(st: MessageStructure) -> str:
    field = header_fields(st.header, ("References",), exclude=False)
    return field.decode("utf-8", "replace").partition(":")[2]


def _fields(
    uid: int, meta: MessageMeta | None, st: MessageStructure | None, threading: bool
) -> sort_keys.Fields:
    """A message's sort fields; what was not asked for (or is gone from the store since the
    search) stays empty, so the message sorts as one without it (RFC 5256 §3)."""
    internal, size = (meta.internal_date, meta.size) if meta is not None else (0, 0)
    if st is None:
        return sort_keys.Fields(uid, internal, size)
    env = st.envelope
    return sort_keys.Fields(
        uid, internal, size, env.date, env.subject, env.from_, env.to, env.cc,
        env.message_id, env.in_reply_to, _references(st) if threading else "",
    )  # fmt: skip


async def _load(
    session: Session, sel: SelectedMailbox, uids: Sequence[int], meta: bool, headers: bool,
    threading: bool = False,
) -> list[sort_keys.Fields]:  # fmt: skip
    """The sort fields of ``uids`` (ascending), in that order."""
    out: list[sort_keys.Fields] = []
    for i in range(0, len(uids), _BATCH):
        batch = uids[i : i + _BATCH]
        metas: dict[int, MessageMeta] = {}
        if meta:
            listed = await list_messages(
                session, sel.name, after_uid=batch[0] - 1, up_to_uid=batch[-1]
            )
            metas = {m.uid: m for m in listed}
        found = await structures(session, sel.name, batch) if headers else {}
        out += [_fields(u, metas.get(u), found.get(u), threading) for u in batch]
    return out


def _numbers(ordered: Sequence[sort_keys.Fields], sel: SelectedMailbox, uid: bool) -> bytes:
    if uid:
        return b" ".join(b"%d" % f.uid for f in ordered)
    return b" ".join(b"%d" % (sel.seq_of(f.uid) or 0) for f in ordered)


async def _matching(session: Session, cmd: Sort | Thread) -> tuple[list[int], Result | None]:
    sel = session.selected
    assert sel is not None
    try:
        uids, _ = await matching(session, sel, cmd.criteria)
    except MailboxLost:
        sel.dirty = True  # the update after this command says BYE [NONEXISTENT]
        return [], no("Mailbox does not exist", "NONEXISTENT")
    except SearchRejected as e:
        return [], bad(f"Invalid search criteria: {e}")
    return uids, None


@handles(Sort, SELECTED)
async def sort(session: Session, cmd: Sort) -> Result:
    sel = session.selected
    assert sel is not None
    uids, failed = await _matching(session, cmd)
    if failed is not None:
        return failed
    keys = {c.key for c in cmd.order}
    fields = await _load(session, sel, uids, bool(keys & _META_KEYS), bool(keys & _HEADER_KEYS))
    ordered = sort_keys.sort(fields, cmd.order)
    line = b"SORT " + _numbers(ordered, sel, cmd.uid) if ordered else b"SORT"
    session.hold(response.untagged(line))  # with the tagged reply
    return ok(f"{cmd.label} completed")


@handles(Thread, SELECTED)
async def thread(session: Session, cmd: Thread) -> Result:
    sel = session.selected
    assert sel is not None
    uids, failed = await _matching(session, cmd)
    if failed is not None:
        return failed
    # The internal date stands in for a missing or unreadable Date (RFC 5256 §2.2).
    fields = await _load(session, sel, uids, meta=True, headers=True, threading=True)
    if cmd.algorithm is ThreadAlgorithm.ORDEREDSUBJECT:
        roots = threads.ordered_subject(fields)
    else:
        roots = threads.references(fields)
    if cmd.uid:
        body = threads.render(roots, lambda f: f.uid)
    else:
        body = threads.render(roots, lambda f: sel.seq_of(f.uid) or 0)
    session.hold(response.untagged(b"THREAD " + body if body else b"THREAD"))
    return ok(f"{cmd.label} completed")
