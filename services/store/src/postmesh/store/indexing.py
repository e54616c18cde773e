"""The store's side of message parsing and search: one adapter over ``postmesh.store.mime``
(MessageMeta extraction) and ``postmesh.store.search`` (search documents and the SearchKey
evaluator), plus the query planning that decides what a search has to load.
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
    doc = search.encode_search_doc(search.build_search_document(raw, meta))
    return MessageIndex(meta.SerializeToString(), doc, mime.sent_day(meta))


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


def uid_bounds(key: store_pb2.SearchKey) -> list[tuple[int, int]] | None:
    """UID ranges (last 0 = "*") every match must fall in, when the criteria say so at the top
    level (a UID key alone or inside a top-level AND), so the backend loads only those;
    None: no bound."""
    which = key.WhichOneof("key")
    if which == "uid":
        return [(r.first, r.last) for r in key.uid.ranges]
    if which == "and":
        for k in getattr(key, "and").keys:
            bounds = uid_bounds(k)
            if bounds is not None:
                return bounds
    return None


def resolve_bounds(bounds: list[tuple[int, int]], max_uid: int) -> list[tuple[int, int]]:
    """Ranges with "*" resolved to the highest UID; "n:*" with n above it still includes it
    (RFC 9051 section 6.4.8)."""
    out = []
    for first, last in bounds:
        end = max_uid if last == 0 else last
        out.append((min(first, end), max(first, end)))
    return out


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
