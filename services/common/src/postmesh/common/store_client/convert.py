"""The store's protobuf messages as the typed values of :mod:`.types`."""

from __future__ import annotations

from collections.abc import Iterable

from postmesh.api.store.v1 import store_pb2
from postmesh.common.store_client.types import (
    Address,
    AppendResult,
    BodyPart,
    Envelope,
    FlagsMode,
    MailboxInfo,
    MessageMeta,
    MessageStructure,
)

MODES = {
    FlagsMode.ADD: store_pb2.FLAGS_MODE_ADD,
    FlagsMode.REMOVE: store_pb2.FLAGS_MODE_REMOVE,
    FlagsMode.REPLACE: store_pb2.FLAGS_MODE_REPLACE,
}


def appended(resp: store_pb2.AppendResponse) -> AppendResult:
    return AppendResult(
        resp.uidvalidity, resp.uid, resp.modseq, tuple(resp.flags), resp.first_recent_uid
    )


def mailbox(info: store_pb2.MailboxInfo) -> MailboxInfo:
    return MailboxInfo(
        name=info.name,
        uidvalidity=info.uidvalidity,
        uidnext=info.uidnext,
        messages=info.messages,
        unseen=info.unseen,
        highestmodseq=info.highestmodseq,
        special_use=info.special_use,
        subscribed=info.subscribed,
        deleted=info.deleted,
        size=info.size,
        noselect=info.noselect,
        has_children=info.has_children,
        first_recent_uid=info.first_recent_uid or 1,
        recent=info.recent,
    )


def meta(m: store_pb2.MessageSummary) -> MessageMeta:
    return MessageMeta(
        uid=m.uid,
        flags=tuple(m.flags),
        size=m.size,
        internal_date=m.internal_date,
        modseq=m.modseq,
    )


def _addresses(addrs: Iterable[store_pb2.Address]) -> tuple[Address, ...]:
    return tuple(Address(a.name, a.adl, a.mailbox, a.host) for a in addrs)


def envelope(env: store_pb2.Envelope) -> Envelope:
    return Envelope(
        date=env.date if env.has_date else None,
        subject=env.subject if env.has_subject else None,
        from_=_addresses(getattr(env, "from")),
        sender=_addresses(env.sender),
        reply_to=_addresses(env.reply_to),
        to=_addresses(env.to),
        cc=_addresses(env.cc),
        bcc=_addresses(env.bcc),
        in_reply_to=env.in_reply_to if env.has_in_reply_to else None,
        message_id=env.message_id if env.has_message_id else None,
    )


def body_part(p: store_pb2.BodyPart) -> BodyPart:
    """The proto BodyPart as the typed one; proto3 strings have no presence, so an empty
    id/description/md5/disposition/location is an absent one (NIL)."""
    is_message = p.HasField("message_body")
    return BodyPart(
        type=p.type,
        subtype=p.subtype,
        params=tuple((b.name, b.value) for b in p.params),
        id=p.id or None,
        description=p.description or None,
        encoding=p.encoding or "7BIT",
        size=p.size,
        lines=p.lines,
        md5=p.md5 or None,
        disposition=p.disposition or None,
        disposition_params=tuple((b.name, b.value) for b in p.disposition_params),
        language=tuple(p.language),
        location=p.location or None,
        parts=tuple(body_part(c) for c in p.parts),
        message_envelope=envelope(p.message_envelope) if is_message else None,
        message_body=body_part(p.message_body) if is_message else None,
        header_offset=p.header_offset,
        body_offset=p.body_offset,
    )


def _envelope_of(m: store_pb2.MessageMeta) -> Envelope:
    return envelope(m.envelope)


def _body_of(m: store_pb2.MessageMeta) -> BodyPart:
    return body_part(m.body)


def structure(m: store_pb2.MessageMeta) -> MessageStructure:
    return MessageStructure(m.uid, m.header, _envelope_of, _body_of, m)
