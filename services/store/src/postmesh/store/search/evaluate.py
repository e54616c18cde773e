"""IMAP SEARCH semantics (RFC 9051 §6.4.4) over ``store_pb2.SearchKey``, as a pure function of
small message records, so both backends share one evaluator.

Criteria are validated (``validate``), then compiled once into predicates; a search calls the
predicate per message. Keys that need the search document (headers, body text) are only
evaluated when the cheap ones in the same AND have not already decided, and the document is
loaded lazily, so a backend can hand in a loader instead of the data.
"""

from __future__ import annotations

import bisect
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from postmesh.api.store.v1 import store_pb2
from postmesh.store.search.document import SearchDocument, decode_search_doc

log = logging.getLogger(__name__)

MAX_DEPTH = 100
MAX_KEYS = 1000
MAX_UID_RANGES = 100_000
SECONDS_PER_DAY = 86_400

# RFC 5322 §2.2: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,200}$")

DocumentSource = SearchDocument | bytes | Callable[[], SearchDocument | bytes] | None
Predicate = Callable[["SearchableMessage"], bool]


def fold(s: str) -> str:
    """Case- and compatibility-folded text for "case-insensitive" substring matching (RFC 9051
    §6.4.4 leaves the comparator to the server; this approximates i;unicode-casemap, RFC 5051)."""
    if s.isascii():
        return s.lower()
    return unicodedata.normalize("NFKC", s).casefold()


@dataclass(frozen=True, slots=True)
class SearchContext:
    """Mailbox-wide facts a search needs: the highest UID, which "*" (last = 0) stands for."""

    max_uid: int


class SearchableMessage:
    """What the evaluator knows about one message. ``internal_date`` is Unix seconds (as
    stored); ``sent_day`` days since 1970-01-01 of the Date header (``mime.sent_day``);
    ``document`` the search document, its encoded bytes, a zero-argument loader returning
    either (called at most once, only if a header/body/text key needs it), or None for a
    message without search data (it then has no headers and no text)."""

    __slots__ = (
        "_doc",
        "_flags",
        "_header_text",
        "_headers",
        "_part_headers",
        "_source",
        "_text",
        "flags",
        "internal_date",
        "modseq",
        "sent_day",
        "size",
        "uid",
    )

    def __init__(
        self,
        uid: int,
        flags: Iterable[str],
        internal_date: int,
        size: int,
        modseq: int,
        sent_day: int | None = None,
        document: DocumentSource = None,
    ) -> None:
        self.uid = uid
        self.flags = frozenset(flags)
        self.internal_date = internal_date
        self.size = size
        self.modseq = modseq
        self.sent_day = sent_day
        self._source = document
        self._doc: SearchDocument | None = None
        self._flags: frozenset[str] | None = None
        self._headers: dict[str, list[str]] | None = None
        self._header_text: str | None = None
        self._text: str | None = None
        self._part_headers: str | None = None

    @property
    def internal_day(self) -> int:
        # IMAP compares dates only; the internal date's day is taken in UTC.
        return self.internal_date // SECONDS_PER_DAY

    def folded_flags(self) -> frozenset[str]:
        # RFC 9051 §9: flags are atoms, and atoms are case-insensitive.
        if self._flags is None:
            self._flags = frozenset(f.lower() for f in self.flags)
        return self._flags

    def document(self) -> SearchDocument:
        if self._doc is None:
            src = self._source
            self._source = None
            try:
                if callable(src):
                    src = src()
                if isinstance(src, bytes):
                    src = decode_search_doc(src)
            except ValueError:
                log.warning("unreadable search document for uid %d; searched as empty", self.uid)
                src = None
            self._doc = src if isinstance(src, SearchDocument) else SearchDocument()
        return self._doc

    def folded_headers(self) -> dict[str, list[str]]:
        if self._headers is None:
            self._headers = {
                name.lower(): [fold(v) for v in values]
                for name, values in self.document().headers.items()
            }
        return self._headers

    def folded_header_text(self) -> str:
        if self._header_text is None:
            self._header_text = "\n".join(
                f"{name}: {value}"
                for name, values in self.folded_headers().items()
                for value in values
            )
        return self._header_text

    def folded_text(self) -> str:
        if self._text is None:
            self._text = fold(self.document().text)
        return self._text

    def folded_part_headers(self) -> str:
        if self._part_headers is None:
            self._part_headers = fold(self.document().part_headers)
        return self._part_headers


def _key_kind(key: store_pb2.SearchKey) -> str | None:
    return key.WhichOneof("key")


def validate(key: store_pb2.SearchKey) -> None:
    """Raises ValueError, with a message fit for the client, unless ``key`` is a well-formed
    criteria tree: every node set, AND/OR non-empty, header names valid, UID sets non-empty
    with UIDs ≥ 1, nesting at most MAX_DEPTH and at most MAX_KEYS keys."""
    count = 0
    stack: list[tuple[store_pb2.SearchKey, int]] = [(key, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_KEYS:
            raise ValueError(f"search criteria have more than {MAX_KEYS} keys")
        if depth > MAX_DEPTH:
            raise ValueError(f"search criteria nested deeper than {MAX_DEPTH}")
        kind = _key_kind(node)
        if kind is None:
            raise ValueError("search key has no criterion set")
        if kind in ("and", "or"):
            children = getattr(node, kind).keys
            if not children:
                raise ValueError(f"{kind.upper()} needs at least one search key")
            stack.extend((child, depth + 1) for child in children)
        elif kind == "not":
            stack.append((getattr(node, "not"), depth + 1))
        elif kind == "header":
            if not _FIELD_NAME.match(node.header.name):
                raise ValueError(f"invalid header field name {node.header.name[:80]!r}")
        elif kind in ("flag_set", "flag_unset"):
            if not getattr(node, kind):
                raise ValueError("empty flag in search key")
        elif kind == "uid":
            ranges = node.uid.ranges
            if not ranges:
                raise ValueError("UID search key has an empty UID set")
            if len(ranges) > MAX_UID_RANGES:
                raise ValueError(f"UID set has more than {MAX_UID_RANGES} ranges")
            for r in ranges:
                if r.first == 0:
                    # RFC 9051 §9: UIDs are nz-number; only "last" may stand for "*" (0).
                    raise ValueError("UID range starts at 0; UIDs start at 1 (use last=0 for *)")


def _walk(key: store_pb2.SearchKey) -> Iterator[store_pb2.SearchKey]:
    stack = [key]
    while stack:
        node = stack.pop()
        yield node
        kind = _key_kind(node)
        if kind in ("and", "or"):
            stack.extend(getattr(node, kind).keys)
        elif kind == "not":
            stack.append(getattr(node, "not"))


def needs_text(key: store_pb2.SearchKey) -> bool:
    """Whether evaluating ``key`` may need the decoded body text (BODY, TEXT)."""
    return any(_key_kind(k) in ("body", "text") for k in _walk(key))


def needs_headers(key: store_pb2.SearchKey) -> bool:
    """Whether evaluating ``key`` may need the decoded header values (HEADER and the
    FROM/TO/CC/BCC/SUBJECT keys sent as HeaderMatch, TEXT)."""
    return any(_key_kind(k) in ("header", "text") for k in _walk(key))


def needs_document(key: store_pb2.SearchKey) -> bool:
    """Whether the search document (headers or text) may be needed at all."""
    return any(_key_kind(k) in ("header", "body", "text") for k in _walk(key))


def uid_spans(ranges: Sequence[store_pb2.UidRange], max_uid: int) -> list[tuple[int, int]]:
    """Inclusive UID spans of a UID set, "*" (last = 0) resolved to ``max_uid``: sorted,
    merged and disjoint."""
    spans: list[tuple[int, int]] = []
    for r in ranges:
        last = max_uid if r.last == 0 else r.last
        # RFC 9051 §6.4.8: "559:*" includes the highest UID even if 559 exceeds it; a range
        # is the same in either order.
        lo, hi = (r.first, last) if r.first <= last else (last, r.first)
        spans.append((lo, hi))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _uid_predicate(ranges: Sequence[store_pb2.UidRange], max_uid: int) -> Predicate:
    merged = uid_spans(ranges, max_uid)
    starts = [lo for lo, _ in merged]
    ends = [hi for _, hi in merged]

    def pred(m: SearchableMessage) -> bool:
        i = bisect.bisect_right(starts, m.uid) - 1
        return i >= 0 and m.uid <= ends[i]

    return pred


# Evaluation cost classes: AND/OR try cheap keys first, so the document is rarely loaded.
_CHEAP, _HEADERS, _TEXT = 0, 1, 2


def _compile(key: store_pb2.SearchKey, ctx: SearchContext) -> tuple[Predicate, int]:
    kind = _key_kind(key)
    if kind == "all":
        return (lambda m: True), _CHEAP
    if kind in ("flag_set", "flag_unset"):
        flag = getattr(key, kind).lower()
        if kind == "flag_set":
            return (lambda m: flag in m.folded_flags()), _CHEAP
        return (lambda m: flag not in m.folded_flags()), _CHEAP
    if kind == "before":
        day = key.before
        return (lambda m: m.internal_day < day), _CHEAP
    if kind == "on":
        day = key.on
        return (lambda m: m.internal_day == day), _CHEAP
    if kind == "since":
        day = key.since
        return (lambda m: m.internal_day >= day), _CHEAP
    if kind == "sent_before":
        day = key.sent_before
        return (lambda m: m.sent_day is not None and m.sent_day < day), _CHEAP
    if kind == "sent_on":
        day = key.sent_on
        return (lambda m: m.sent_day is not None and m.sent_day == day), _CHEAP
    if kind == "sent_since":
        day = key.sent_since
        return (lambda m: m.sent_day is not None and m.sent_day >= day), _CHEAP
    if kind == "larger":
        n = key.larger
        return (lambda m: m.size > n), _CHEAP
    if kind == "smaller":
        n = key.smaller
        return (lambda m: m.size < n), _CHEAP
    if kind == "modseq":
        n = key.modseq
        return (lambda m: m.modseq >= n), _CHEAP
    if kind == "uid":
        return _uid_predicate(key.uid.ranges, ctx.max_uid), _CHEAP
    if kind == "header":
        name = key.header.name.lower()
        needle = fold(key.header.value)
        if not needle:
            # RFC 9051 §6.4.4: an empty string matches every message that has the field.
            return (lambda m: name in m.folded_headers()), _HEADERS
        return (lambda m: any(needle in v for v in m.folded_headers().get(name, ()))), _HEADERS
    if kind == "body":
        needle = fold(key.body)
        return (lambda m: needle in m.folded_text()), _TEXT
    if kind == "text":
        needle = fold(key.text)
        # The header, or the body: its text and its parts' MIME headers (RFC 9051 §6.4.4).
        return (
            lambda m: (
                needle in m.folded_header_text()
                or needle in m.folded_text()
                or needle in m.folded_part_headers()
            )
        ), _TEXT
    if kind in ("and", "or"):
        compiled = sorted(
            (_compile(child, ctx) for child in getattr(key, kind).keys), key=lambda pc: pc[1]
        )
        preds = [p for p, _ in compiled]
        cost = max(c for _, c in compiled)
        if len(preds) == 1:
            return preds[0], cost
        if kind == "and":
            return (lambda m: all(p(m) for p in preds)), cost
        return (lambda m: any(p(m) for p in preds)), cost
    if kind == "not":
        inner, cost = _compile(getattr(key, "not"), ctx)
        return (lambda m: not inner(m)), cost
    raise ValueError("search key has no criterion set")


def compile_key(key: store_pb2.SearchKey, ctx: SearchContext) -> Predicate:
    """A validated predicate for ``key`` (ValueError if ``validate`` rejects it)."""
    validate(key)
    return _compile(key, ctx)[0]


def matches(key: store_pb2.SearchKey, msg: SearchableMessage, ctx: SearchContext) -> bool:
    """Whether ``msg`` satisfies ``key`` (ValueError for invalid criteria)."""
    return compile_key(key, ctx)(msg)


def matching(
    key: store_pb2.SearchKey, messages: Iterable[SearchableMessage], ctx: SearchContext
) -> Iterator[SearchableMessage]:
    """The messages that satisfy ``key``, in input order (validation happens first)."""
    pred = compile_key(key, ctx)
    return (m for m in messages if pred(m))


def search(
    key: store_pb2.SearchKey, messages: Iterable[SearchableMessage], ctx: SearchContext
) -> list[int]:
    """UIDs of the messages that satisfy ``key``, ascending (ValueError for invalid criteria)."""
    return sorted(m.uid for m in matching(key, messages, ctx))
