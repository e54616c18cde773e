"""Query planning for IMAP SEARCH (RFC 9051 §6.4.4): which part of a ``SearchKey`` tree a
backend answers in its own query, and which part is left to the Python evaluator.

The plan is backend-neutral: ``pushed`` is a small condition tree over a message's columns
(flags, UID, dates, size, MODSEQ) and its indexed header values, which each backend translates
into SQL (``sqlite/search_sql.py``) or a MongoDB filter (``mongodb/search_filter.py``);
``residual`` is the rest of a top-level AND (BODY, TEXT, HEADER on a field that is not indexed,
and anything the backend cannot express), evaluated by ``evaluate.py`` on the rows the query
returns. The pushed conditions must give exactly the evaluator's answer; the contract suite
compares the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from postmesh.api.store.v1 import store_pb2
from postmesh.store.search.evaluate import SECONDS_PER_DAY, fold, needs_document, uid_spans

INT64_MAX = 2**63 - 1

# Header fields whose decoded, folded values are stored apart from the search document, so a
# backend can match them in its query. The keys clients send (FROM, TO, CC, BCC, SUBJECT) and
# the fields a HEADER search names most; a HEADER on any other field is evaluated in Python.
INDEXED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "reply-to", "sender", "message-id",
        "in-reply-to", "references", "list-id",
    }
)  # fmt: skip
# Bumped when INDEXED_HEADERS or the folding changes: rows indexed under another version are
# evaluated in Python (MongoDB) or re-indexed on open (SQLite).
HEADERS_VERSION = 1


def indexed_headers(headers: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(lower-case name, folded value) of the indexed fields of a search document's headers,
    in document order: what the backends store and ``HeaderHas`` matches against."""
    out: list[tuple[str, str]] = []
    for name, values in headers.items():
        low = name.lower()
        if low in INDEXED_HEADERS:
            out.extend((low, fold(v)) for v in values)
    return out


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


@dataclass(frozen=True, slots=True)
class HasFlag:
    """The message has this flag (compared lower-cased: flags are atoms, RFC 9051 §9)."""

    flag: str


@dataclass(frozen=True, slots=True)
class UidIn:
    """UID in one of these inclusive, sorted, disjoint spans."""

    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """``column op value``; false when the column is NULL (only sent_day can be)."""

    column: Literal["internal_date", "size", "modseq", "sent_day"]
    op: Literal["<", ">", ">=", "="]
    value: int


@dataclass(frozen=True, slots=True)
class HeaderHas:
    """An indexed header field ``name`` has a value containing ``needle`` (both folded);
    an empty needle: the field is present (RFC 9051 §6.4.4)."""

    name: str
    needle: str


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Cond, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Cond, ...]


@dataclass(frozen=True, slots=True)
class Negate:
    part: Cond


Cond = Const | HasFlag | UidIn | Compare | HeaderHas | AllOf | AnyOf | Negate
TRUE = Const(True)


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Limits:
    """What a backend's query can express: at most ``max_uid_spans`` UID spans, conditions
    nested at most ``max_depth`` deep (SQLite's expression depth, MongoDB's document depth),
    and the flags and header needles its predicates accept (others stay with the evaluator)."""

    max_uid_spans: int = 100
    max_depth: int = 30
    flag_ok: Callable[[str], bool] = field(default=_always)
    needle_ok: Callable[[str], bool] = field(default=_always)


@dataclass(frozen=True, slots=True)
class Plan:
    pushed: Cond
    # What the evaluator still checks on every row the query returns (None: nothing).
    residual: store_pb2.SearchKey | None
    # ``pushed`` matches indexed header values: rows without them must be returned too and
    # evaluated in full by the caller.
    uses_headers: bool
    # The residual may need the search document (header/body/text keys).
    residual_needs_document: bool


def _kind(key: store_pb2.SearchKey) -> str | None:
    return key.WhichOneof("key")


def _days(column: Literal["internal_date"], op: str, day: int) -> Cond:
    # IMAP compares dates only; the internal date's day is taken in UTC, as the evaluator does.
    start = day * SECONDS_PER_DAY
    if op == "before":
        return Compare(column, "<", start)
    if op == "since":
        return Compare(column, ">=", start)
    return AllOf((Compare(column, ">=", start), Compare(column, "<", start + SECONDS_PER_DAY)))


def _translate(
    key: store_pb2.SearchKey, max_uid: int, limits: Limits, depth: int = 1
) -> Cond | None:
    """The condition for ``key``, or None when the backend cannot answer all of it."""
    if depth > limits.max_depth:
        return None
    kind = _kind(key)
    if kind == "all":
        return TRUE
    if kind in ("flag_set", "flag_unset"):
        flag = str(getattr(key, kind)).lower()
        if not limits.flag_ok(flag):
            return None
        return HasFlag(flag) if kind == "flag_set" else Negate(HasFlag(flag))
    if kind in ("before", "on", "since"):
        return _days("internal_date", kind, int(getattr(key, kind)))
    if kind == "sent_before":
        return Compare("sent_day", "<", key.sent_before)
    if kind == "sent_on":
        return Compare("sent_day", "=", key.sent_on)
    if kind == "sent_since":
        return Compare("sent_day", ">=", key.sent_since)
    # Stored sizes and MODSEQs are signed 64-bit in both backends; beyond that, the answer is
    # known without asking.
    if kind == "larger":
        return Const(False) if key.larger >= INT64_MAX else Compare("size", ">", key.larger)
    if kind == "smaller":
        return TRUE if key.smaller > INT64_MAX else Compare("size", "<", key.smaller)
    if kind == "modseq":
        return Const(False) if key.modseq > INT64_MAX else Compare("modseq", ">=", key.modseq)
    if kind == "uid":
        spans = uid_spans(key.uid.ranges, max_uid)
        return UidIn(tuple(spans)) if len(spans) <= limits.max_uid_spans else None
    if kind == "header":
        name = key.header.name.lower()
        needle = fold(key.header.value)
        if name not in INDEXED_HEADERS or not limits.needle_ok(needle):
            return None
        return HeaderHas(name, needle)
    if kind in ("and", "or"):
        group = AllOf if kind == "and" else AnyOf
        done: list[Cond] = []
        for child in getattr(key, kind).keys:
            # "OR a OR b c" nests in IMAP's grammar; flattened, it costs no depth.
            same = _kind(child) == kind
            part = _translate(child, max_uid, limits, depth if same else depth + 1)
            if part is None:
                return None
            done.extend(part.parts if same and isinstance(part, group) else (part,))
        return group(tuple(done))
    if kind == "not":
        inner = _translate(getattr(key, "not"), max_uid, limits, depth + 1)
        return None if inner is None else Negate(inner)
    return None  # body, text: the search document's body text stays with the evaluator


def _conjuncts(key: store_pb2.SearchKey) -> list[store_pb2.SearchKey]:
    """The keys of a top-level AND, nested ANDs flattened (the gateway wraps the client's
    criteria in an AND with its UID view)."""
    if _kind(key) != "and":
        return [key]
    return [c for k in getattr(key, "and").keys for c in _conjuncts(k)]


def _uses_headers(cond: Cond) -> bool:
    if isinstance(cond, HeaderHas):
        return True
    if isinstance(cond, AllOf | AnyOf):
        return any(_uses_headers(p) for p in cond.parts)
    if isinstance(cond, Negate):
        return _uses_headers(cond.part)
    return False


def _and(keys: Sequence[store_pb2.SearchKey]) -> store_pb2.SearchKey:
    if len(keys) == 1:
        return keys[0]
    out = store_pb2.SearchKey()
    getattr(out, "and").keys.extend(keys)
    return out


def plan(criteria: store_pb2.SearchKey, max_uid: int, limits: Limits | None = None) -> Plan:
    """Split validated ``criteria`` into what the backend's query answers and the residual."""
    limits = limits or Limits()
    pushed: list[Cond] = []
    rest: list[store_pb2.SearchKey] = []
    for key in _conjuncts(criteria):
        cond = _translate(key, max_uid, limits)
        if cond is None:
            rest.append(key)
        elif cond != TRUE:
            pushed.append(cond)
    top: Cond = TRUE if not pushed else pushed[0] if len(pushed) == 1 else AllOf(tuple(pushed))
    residual = _and(rest) if rest else None
    return Plan(
        top,
        residual,
        _uses_headers(top),
        residual is not None and needs_document(residual),
    )
