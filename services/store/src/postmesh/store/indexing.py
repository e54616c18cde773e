"""The store's side of message parsing and search: one adapter over ``postmesh.store.mime``
(MessageMeta extraction) and ``postmesh.store.search`` (search documents, indexed header
fields and the SearchKey evaluator); the query planning is ``search.plan``.
"""

from __future__ import annotations

from collections.abc import Callable

from postmesh.api.store.v1 import store_pb2
from postmesh.store import mime, search
from postmesh.store.errors import InvalidArgument
from postmesh.store.model import MessageIndex, SearchCandidate

MAX_UID = 0xFFFFFFFF


def index_content(raw: bytes) -> MessageIndex:
    """Parse a message once (CPU-bound: call it in a worker thread)."""
    meta = mime.extract_meta(raw)
    doc = search.build_search_document(raw, meta)
    headers = tuple(search.indexed_headers(doc.headers))
    return MessageIndex(
        meta.SerializeToString(),
        search.encode_search_doc(doc),
        mime.sent_day(meta),
        headers,
        in_wire_form(raw),
    )


def in_wire_form(raw: bytes) -> bool:
    """Is the content its own POP3 (RFC 1939 section 3) and SMTP DATA (RFC 5321 section
    4.5.2) form: every line ends in CRLF, the last one too, and none begins with "."? Then a
    gateway sends it as stored, with no byte-stuffing scan per read (ADR 0042); a few C-speed
    passes here, once per content."""
    return (
        raw.endswith(b"\r\n")
        and not raw.startswith(b".")
        and b"\n." not in raw
        and raw.count(b"\n") == raw.count(b"\r\n")
    )


def search_headers(index: MessageIndex) -> list[tuple[str, str]]:
    """The indexed header values of a stored index; from its search document when the index
    was read back without them (an unreadable document has none, as the evaluator sees it)."""
    if index.headers is not None:
        return list(index.headers)
    return headers_of_document(index.search)


def headers_of_document(data: bytes | None) -> list[tuple[str, str]]:
    if data is None:
        return []
    try:
        doc = search.decode_search_doc(data)
    except ValueError:
        return []
    return search.indexed_headers(doc.headers)


def validate(criteria: store_pb2.SearchKey) -> None:
    """A well-formed criteria tree (``search.validate``) whose UID ranges are normalised:
    first >= 1 and first <= last unless last is 0 ("*"). IMAP allows "4:2" for "2:4"
    (RFC 9051 section 9); the gateway sends it as 2:4, so first > last here is a bug."""
    try:
        search.validate(criteria)
    except ValueError as e:
        raise InvalidArgument(f"invalid search criteria: {e}") from None
    stack = [criteria]
    while stack:
        key = stack.pop()
        which = key.WhichOneof("key")
        if which == "uid":
            for r in key.uid.ranges:
                if r.last and r.first > r.last:
                    raise InvalidArgument(
                        f"invalid uid range {r.first}:{r.last}: first is above last"
                    )
        elif which in ("and", "or"):
            stack.extend(getattr(key, which).keys)
        elif which == "not":
            stack.append(getattr(key, "not"))


def needs_content(criteria: store_pb2.SearchKey) -> bool:
    """Does evaluating the criteria need search documents (headers, body text)?"""
    return search.needs_document(criteria)


def matcher(criteria: store_pb2.SearchKey, max_uid: int) -> Callable[[SearchCandidate], bool]:
    """A predicate over candidates (criteria validated first)."""
    pred = search.compile_key(criteria, search.SearchContext(max_uid=max_uid))

    def match(c: SearchCandidate) -> bool:
        m = c.message
        return pred(
            search.SearchableMessage(
                m.uid, m.flags, m.internal_date, m.size, m.modseq, c.sent_day, c.search
            )
        )

    return match
