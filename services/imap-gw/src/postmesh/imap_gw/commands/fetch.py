"""FETCH and UID FETCH (RFC 9051 §6.4.5, §6.4.9), BINARY (RFC 3516), CHANGEDSINCE and VANISHED
(RFC 7162 §3.1.4.1, §3.2.6).

Each FETCH asks the store only for what its items need: message metadata (flags, sizes, dates,
MODSEQ) when an item or the \\Seen side effect needs it, the parsed structure (GetMessageMeta)
for ENVELOPE, BODY[STRUCTURE] and any section other than the whole message, and the content
only for body sections that are not the top-level header (several messages' contents in store
streams, ``fetch_contents.py``). UID, FLAGS and MODSEQ alone are
answered from the selected-mailbox model after a resynchronisation (``fetch_flags.py``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from postmesh.imap_gw import fetch_render, response, vanished
from postmesh.imap_gw.backend import FlagsMode, MessageMeta, MessageNotFound, MessageStructure
from postmesh.imap_gw.commands import SELECTED, handles
from postmesh.imap_gw.commands.fetch_flags import fetch_from_model, from_model
from postmesh.imap_gw.commands.sync import MailboxLost, list_messages, resync, uid_set
from postmesh.imap_gw.fetch_contents import ContentReader
from postmesh.imap_gw.message import (
    UnknownCte,
    binary_bytes,
    binary_size_known,
    header_section,
    needs_content,
    partial,
    section_bytes,
)
from postmesh.imap_gw.parser.commands import Fetch
from postmesh.imap_gw.parser.fetch import FetchAtt, FetchKind
from postmesh.imap_gw.parser.sequence import SequenceError
from postmesh.imap_gw.session import Result, Session, bad, no, ok

_FLAGS = FetchAtt(FetchKind.FLAGS)
_UID = FetchAtt(FetchKind.UID)
_MODSEQ = FetchAtt(FetchKind.MODSEQ)
_META_KINDS = frozenset(
    {FetchKind.FLAGS, FetchKind.INTERNALDATE, FetchKind.RFC822_SIZE, FetchKind.MODSEQ}
)
_STRUCTURE_KINDS = frozenset(
    {
        FetchKind.ENVELOPE,
        FetchKind.BODYSTRUCTURE,
        FetchKind.BODY_STRUCTURE,
        FetchKind.RFC822_HEADER,
        FetchKind.RFC822_TEXT,
        FetchKind.BINARY,
        FetchKind.BINARY_SIZE,
    }
)
# GetMessageMeta UIDs per request: bounded answers for FETCH 1:* (ENVELOPE). Each call costs
# imap-gw and the store ~0.8 ms of CPU of its own whatever its size, so not smaller: 512 (not
# 256) made FETCH 1:1000 BODY.PEEK[HEADER] ~10 % quicker; a typical answer is then ~0.3-1 MB,
# far below the 16 MiB gRPC message limit even at 30 KB of header per message (ADR 0056).
_STRUCTURE_BATCH = 512
# ... and at most this many such requests at once (their round trips overlap).
_STRUCTURE_CALLS = 4
# Output is written in batches of about this size (see _Output).
_WRITE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Needs:
    """What the store must be asked for, from the items of one FETCH."""

    meta: bool
    structure: bool
    content: bool  # for every message (BINARY.SIZE may still need it per message)

    @classmethod
    def of(cls, atts: Sequence[FetchAtt], changed_since: int | None) -> _Needs:
        meta = changed_since is not None or any(a.kind in _META_KINDS or a.sets_seen for a in atts)
        structure = False
        content = False
        for a in atts:
            if a.kind in _STRUCTURE_KINDS:
                structure = True
            if a.kind is FetchKind.BODY_SECTION:
                whole = a.section is None or (not a.section.part and a.section.text is None)
                structure = structure or not whole
                content = content or needs_content(a.section)
            elif a.kind in (FetchKind.RFC822, FetchKind.RFC822_TEXT, FetchKind.BINARY):
                content = True
        return cls(meta, structure, content)


def _top_header(att: FetchAtt) -> bool:
    """BODY[HEADER], BODY[HEADER.FIELDS (...)] and their kin of the top-level message: from
    the stored header block alone."""
    return att.kind is FetchKind.BODY_SECTION and not needs_content(att.section)


class _Render:
    """Renders the FETCH items of one message after the other (:meth:`at`); ``raw`` and
    ``structure`` as fetched. Made once per FETCH: what does not change from one message to
    the next is worked out once (1,000 messages' headers: ~2 ms of imap-gw's ~10, ADR 0056)."""

    def __init__(self, session: Session, atts: Sequence[FetchAtt]) -> None:
        self.utf8 = session.utf8 or session.rev2
        self.selected = session.selected
        self.uid = 0
        self.meta: MessageMeta | None = None
        self.structure: MessageStructure | None = None
        self.raw: bytes | None = None
        # Each item with its response name if it is answered from the header block.
        self._plan = [(a, _name(a) if _top_header(a) else None) for a in atts]

    def at(
        self,
        uid: int,
        meta: MessageMeta | None,
        structure: MessageStructure | None,
        raw: bytes | None,
    ) -> _Render:
        self.uid, self.meta, self.structure, self.raw = uid, meta, structure, raw
        return self

    def items(self, pieces: list[bytes]) -> None:
        """Every item of the FETCH for the current message, space-separated, onto ``pieces``."""
        st = self.structure
        for i, (att, header_name) in enumerate(self._plan):
            if i:
                pieces.append(b" ")
            if header_name is not None and st is not None:
                # The top-level header: from the metadata, without building the body tree.
                header = header_section(st.header, att.section)
                pieces += _literal(header_name, partial(header, att.partial))
            else:
                pieces += self.item(att)

    def item(self, att: FetchAtt) -> list[bytes]:
        """The item as pieces to join (large literals are not copied more than once)."""
        kind = att.kind
        if kind is FetchKind.UID:
            return [b"UID %d" % self.uid]
        if kind in _META_KINDS:
            m = self.meta
            assert m is not None
            if kind is FetchKind.FLAGS:
                flags = (
                    m.flags if self.selected is None else self.selected.shown_flags(m.uid, m.flags)
                )
                return [b"FLAGS " + response.flag_list(flags)]
            if kind is FetchKind.RFC822_SIZE:
                return [b"RFC822.SIZE %d" % m.size]
            if kind is FetchKind.MODSEQ:
                return [b"MODSEQ (%d)" % m.modseq]
            return [b"INTERNALDATE " + response.internal_date(m.internal_date)]
        if kind is FetchKind.RFC822:
            assert self.raw is not None
            return _literal(b"RFC822", self.raw)
        st = self.structure
        if st is None:
            # BODY[] alone needs no structure: the whole message.
            assert self.raw is not None and kind is FetchKind.BODY_SECTION
            return _literal(_name(att), partial(self.raw, att.partial))
        if kind is FetchKind.ENVELOPE:
            return [b"ENVELOPE " + fetch_render.envelope(st.envelope, utf8=self.utf8)]
        if kind in (FetchKind.BODYSTRUCTURE, FetchKind.BODY_STRUCTURE):
            ext = kind is FetchKind.BODYSTRUCTURE
            name = b"BODYSTRUCTURE " if ext else b"BODY "
            return [name + fetch_render.body(st.body, extensible=ext, utf8=self.utf8)]
        if kind is FetchKind.RFC822_HEADER:
            return _literal(b"RFC822.HEADER", st.header)
        if kind is FetchKind.RFC822_TEXT:
            assert self.raw is not None
            return _literal(b"RFC822.TEXT", self.raw[st.body.body_offset :])
        section = att.section
        part = section.part if section is not None else ()
        if kind is FetchKind.BINARY_SIZE:
            size = self._binary_size(st, part)
            return [_name(att) + (b" NIL" if size is None else b" %d" % size)]
        name = _name(att)
        if kind is FetchKind.BINARY:
            assert self.raw is not None
            data = binary_bytes(self.raw, st.body, part)
            if data is None:
                return [name + b" NIL"]
            return _literal(name, partial(data, att.partial), binary=True)
        if not needs_content(section):
            # The top-level header: from the metadata, without building the body tree.
            return _literal(name, partial(header_section(st.header, section), att.partial))
        size = len(self.raw) if self.raw is not None else 0
        body = section_bytes(self.raw, st.header, st.body, section, size)
        if body is None:
            return [name + b" NIL"]  # no such part
        return _literal(name, partial(body, att.partial))

    def _binary_size(self, st: MessageStructure, part: tuple[int, ...]) -> int | None:
        if not part:
            return st.body.body_offset + st.body.size  # the whole message
        known = binary_size_known(st.body, part)
        if known is not None or self.raw is None:
            return known
        data = binary_bytes(self.raw, st.body, part)
        return None if data is None else len(data)


@functools.lru_cache(maxsize=256)
def _name(att: FetchAtt) -> bytes:
    """The item's response name, formatted once per distinct item rather than per message."""
    return att.response_name().encode()


def _literal(name: bytes, data: bytes, *, binary: bool = False) -> list[bytes]:
    """Message data always goes out as a literal: it may hold anything (RFC 9051 §4.3);
    decoded BINARY data with NUL octets as a literal8 (RFC 3516 §4.3).

    A literal cannot carry NUL (RFC 9051 §9 CHAR8, §4.3.1: binary only in a BINARY literal8),
    yet BINARYMIME mail may hold it (ADR 40). In BODY[], RFC822 and their kin each NUL is sent
    as 0x80, as Dovecot does: same length (sizes and partial offsets stay right), every other
    octet as stored; BINARY[...] gives the octets exactly."""
    has_nul = b"\0" in data
    if has_nul and not binary:
        data = data.replace(b"\0", b"\x80")
    prefix = b"~" if binary and has_nul else b""
    return [name, b" %s{%d}\r\n" % (prefix, len(data)), data]


def _content_needed_for_size(atts: Sequence[FetchAtt], st: MessageStructure | None) -> bool:
    """BINARY.SIZE of an encoded part: only the decoded content tells its size."""
    if st is None:
        return False
    for a in atts:
        part = a.section.part if a.section is not None else ()
        if a.kind is FetchKind.BINARY_SIZE and part and binary_size_known(st.body, part) is None:
            return True
    return False


class _Output:
    """FETCH responses gathered into writes of about :data:`_WRITE_BYTES`: one write (and one
    wait for the client to read) per batch, not per message, and each piece copied once."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pieces: list[bytes] = []
        self._size = 0

    async def add(self, pieces: list[bytes]) -> None:
        self._pieces += pieces
        self._size += sum(map(len, pieces))
        if self._size >= _WRITE_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._pieces:
            data = b"".join(self._pieces)
            self._pieces, self._size = [], 0
            await self._session.send(data)

    def last(self) -> None:
        """The rest goes out with the tagged reply."""
        if self._pieces:
            self._session.hold(b"".join(self._pieces))
            self._pieces, self._size = [], 0


async def structures(
    session: Session, mailbox: str, uids: Sequence[int]
) -> dict[int, MessageStructure]:
    assert session.user is not None
    user = session.user
    out: dict[int, MessageStructure] = {}
    batches = [uids[i : i + _STRUCTURE_BATCH] for i in range(0, len(uids), _STRUCTURE_BATCH)]
    for i in range(0, len(batches), _STRUCTURE_CALLS):
        # A few calls in flight at once: their round trips overlap instead of adding up.
        answers = await asyncio.gather(
            *(
                session.store.get_structure(user, mailbox, b)
                for b in batches[i : i + _STRUCTURE_CALLS]
            )
        )
        for answer in answers:
            for st in answer:
                out[st.uid] = st
    return out


async def _vanished(session: Session, cmd: Fetch, since: int) -> None:
    """RFC 7162 §3.2.6: before the FETCH data, the UIDs of the requested set that were
    expunged after ``since``, as ``VANISHED (EARLIER)``."""
    sel = session.selected
    assert sel is not None and session.user is not None
    changes = await session.store.get_changes(session.user, sel.name, since)
    largest = max(sel.uidnext - 1, sel.uids[-1] if sel.uids else 0, *changes.expunged_uids, 0)
    ranges = [(largest if a == 0 else a, largest if b == 0 else b) for a, b in cmd.sequence.ranges]
    gone = [u for u in changes.expunged_uids if any(min(a, b) <= u <= max(a, b) for a, b in ranges)]
    if changes.expunged_incomplete:
        # Tombstones since ``since`` are gone (the store's janitor): also every UID of the set
        # up to the largest known that this session does not hold, a superset the client
        # sorts out (vanished.py).
        bounded = [(min(a, b), min(max(a, b), largest)) for a, b in ranges]
        missing = vanished.not_live(sel.uids, [(a, b) for a, b in bounded if a <= b])
        if missing or gone:
            text = vanished.uid_set([*missing, *((u, u) for u in gone)])
            await session.untagged("VANISHED (EARLIER) " + text)
        return
    if gone:
        await session.untagged("VANISHED (EARLIER) " + uid_set(gone))


@handles(Fetch, SELECTED)
async def fetch(session: Session, cmd: Fetch) -> Result:
    sel = session.selected
    assert sel is not None and session.user is not None
    mods = cmd.modifiers
    if mods.vanished and not session.qresync:
        return bad("VANISHED needs ENABLE QRESYNC first (RFC 7162 §3.2.6)", "CLIENTBUG")
    sequence = cmd.sequence  # "$" already expanded by dispatch (RFC 5182)
    try:
        if cmd.uid:
            # Non-existent UIDs are ignored, not an error (RFC 9051 §6.4.9).
            uids = sequence.resolve_uids(sel.uids)
        else:
            uids = [sel.uids[seq - 1] for seq in sequence.resolve_seq(sel.exists)]
    except SequenceError as e:
        return bad(str(e), "CLIENTBUG")
    atts = list(dict.fromkeys(cmd.attributes))
    if cmd.uid and _UID not in atts:
        atts.insert(0, _UID)  # UID FETCH responses always carry the UID (RFC 9051 §6.4.9)
    if mods.changed_since is not None or _MODSEQ in atts:
        session.condstore = True  # CONDSTORE-enabling (RFC 7162 §3.1)
        if _MODSEQ not in atts:
            atts.append(_MODSEQ)  # CHANGEDSINCE implies MODSEQ (RFC 7162 §3.1.4.1)
    if mods.vanished and mods.changed_since is not None:
        await _vanished(session, cmd, mods.changed_since)
    if not uids:
        return ok("FETCH completed")
    if from_model(atts):
        return await fetch_from_model(session, uids, atts, mods.changed_since, by_uid=cmd.uid)
    needs = _Needs.of(atts, mods.changed_since)

    metas: dict[int, MessageMeta] = {}
    present = uids
    gone = False
    if needs.meta:
        # Fresh metadata from the store: flags may have changed in another session.
        listed = await list_messages(session, sel.name, after_uid=uids[0] - 1, up_to_uid=uids[-1])
        metas = {m.uid: m for m in listed}
        present = [u for u in uids if u in metas]
        gone = len(present) < len(uids)
        if mods.changed_since is not None:
            since = mods.changed_since
            present = [u for u in present if metas[u].modseq > since]

    # Fetching the text without PEEK sets \Seen, and the FLAGS change is reported in the same
    # FETCH response (RFC 9051 §6.4.5). A read-only (EXAMINEd) mailbox stays unchanged.
    seen_set: set[int] = set()
    if not sel.readonly and any(a.sets_seen for a in atts):
        if needs.meta:
            targets = [u for u in present if "\\Seen" not in metas[u].flags]
        else:
            # No metadata asked for: the client's view says which are unseen (kept current by
            # the mailbox events: a pending change is merged first).
            try:
                await resync(session)
            except MailboxLost:
                sel.dirty = True  # the store call below fails; the update loop says BYE
            targets = [u for u in present if "\\Seen" not in sel.flags_of(u)]
        if targets:
            updated = await session.store.store_flags(
                session.user, sel.name, targets, FlagsMode.ADD, ["\\Seen"]
            )
            for m in updated:
                known = metas[m.uid].flags if m.uid in metas else sel.flags_of(m.uid)
                if "\\Seen" not in known:
                    seen_set.add(m.uid)
                metas[m.uid] = m
            if not needs.meta:
                # The store's answer lists the messages it still has.
                missing = set(targets).difference(m.uid for m in updated)
                if missing:
                    present = [u for u in present if u not in missing]
                    gone = True

    by_uid = await structures(session, sel.name, present) if needs.structure else {}
    if needs.structure and len(by_uid) < len(present):
        gone = True
        present = [u for u in present if u in by_uid]

    contents = await _content_reader(session, present, metas) if needs.content else None
    try:
        return await _render(session, cmd, atts, present, metas, by_uid, seen_set, contents, gone)
    finally:
        if contents is not None:
            await contents.aclose()


async def _content_reader(
    session: Session, present: list[int], metas: dict[int, MessageMeta]
) -> ContentReader:
    """The contents every message of the FETCH needs, read ahead by their sizes (from the
    listing the FETCH read, or one read for them when it asked for several)."""
    sel = session.selected
    assert sel is not None and session.user is not None
    sizes = {uid: m.size for uid, m in metas.items()}
    if not metas and len(present) > 1:
        listed = await list_messages(
            session, sel.name, after_uid=present[0] - 1, up_to_uid=present[-1]
        )
        sizes = {m.uid: m.size for m in listed}
    return ContentReader(session.store, session.user, sel.name, present, sizes)


async def _render(
    session: Session,
    cmd: Fetch,
    atts: list[FetchAtt],
    present: list[int],
    metas: dict[int, MessageMeta],
    structures: dict[int, MessageStructure],
    seen_set: set[int],
    contents: ContentReader | None,
    gone: bool,
) -> Result:
    """The FETCH responses, message by message, then the tagged answer."""
    sel = session.selected
    assert sel is not None and session.user is not None
    out = _Output(session)
    # Asked once per FETCH, not per message (1,000 messages: ~1 ms of imap-gw's ~10 ms).
    seq_of = dict(zip(*sel.present(present), strict=True))
    shows_flags, shows_modseq = _FLAGS in atts, _MODSEQ in atts
    sizes_may_need_content = any(a.kind is FetchKind.BINARY_SIZE for a in atts)
    renderer = _Render(session, atts)
    for uid in present:
        seq = seq_of.get(uid, 0)
        meta = metas.get(uid)
        st = structures.get(uid)
        raw = None
        if contents is not None or (sizes_may_need_content and _content_needed_for_size(atts, st)):
            try:
                if contents is not None:
                    raw = await contents.get(uid)
                else:
                    raw = await session.store.get_content(session.user, sel.name, uid)
            except MessageNotFound:
                gone = True
                continue
        render = renderer.at(uid, meta, st, raw)
        pieces = [b"* %d FETCH (" % seq]
        try:
            render.items(pieces)
        except UnknownCte:
            await out.flush()
            return no("Unknown Content-Transfer-Encoding, cannot decode", "UNKNOWN-CTE")
        if meta is not None and (shows_flags or uid in seen_set):
            sel.record(meta)  # the client is sent these flags: nothing left to report
        if uid in seen_set:
            if not shows_flags:
                pieces += [b" ", *render.item(_FLAGS)]
            if session.condstore and not shows_modseq:
                pieces += [b" ", *render.item(_MODSEQ)]
        pieces.append(b")\r\n")
        await out.add(pieces)
    out.last()
    if gone and not cmd.uid:
        # RFC 9051 §7.1: some messages were expunged; the client learns which at the next NOOP.
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")
