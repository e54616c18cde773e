"""A search plan's pushed conditions (``search.plan``) as a MongoDB query filter, in operators
FerretDB 1.24 also has ($and, $or, $nor, comparisons, $in, $regex).

Message documents carry their indexed header fields as ``sh``, an array of ``"name:value"``
strings (lower-case name, folded value; ":" cannot occur in a field name, RFC 5322 §2.2) and
``shv`` (``search.HEADERS_VERSION``); a document without them is evaluated in Python. Header
names may contain dots, so they cannot be field names (FerretDB refuses those).
"""

from __future__ import annotations

from typing import Any

from postmesh.store.search import HEADERS_VERSION, Limits
from postmesh.store.search.plan import (
    AllOf,
    AnyOf,
    Compare,
    Cond,
    Const,
    HasFlag,
    HeaderHas,
    Negate,
    UidIn,
)
from postmesh.store.validation import SYSTEM_FLAGS

Doc = dict[str, Any]

_OPS = {"<": "$lt", ">": "$gt", ">=": "$gte"}
# Matches no document (uids start at 1).
NOTHING: Doc = {"_id": {"$in": []}}


def _flag_ok(flag: str) -> bool:
    # A regex with the "i" option folds non-ASCII letters too (U+017F LONG S matches "s"), where the
    # evaluator compares lower-cased atoms; stored flags are 7-bit (validation.flag).
    return flag.isascii() and "\x00" not in flag


def _needle_ok(needle: str) -> bool:
    # BSON strings are UTF-8 and a regex cannot hold NUL.
    if "\x00" in needle:
        return False
    try:
        needle.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# MongoDB nests documents at most 100 deep; each condition level costs two ($op and its list).
LIMITS = Limits(max_uid_spans=100, max_depth=20, flag_ok=_flag_ok, needle_ok=_needle_ok)


def literal(text: str) -> str:
    """``text`` as a regex matching itself, alike in PCRE (MongoDB) and RE2 (FerretDB): ASCII
    punctuation, space and controls as \\xHH, letters, digits and non-ASCII as they are."""
    return "".join(c if (c.isalnum() or not c.isascii()) else f"\\x{ord(c):02x}" for c in text)


def header_values(headers: list[tuple[str, str]]) -> list[str] | None:
    """The ``sh`` array for a message's indexed headers; None when a value cannot be stored
    as BSON text (a lone surrogate): the message is then evaluated in Python."""
    out = [f"{name}:{value}" for name, value in headers]
    try:
        for item in out:
            item.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return out


def header_fields(headers: list[tuple[str, str]]) -> Doc:
    """The fields a message document gets for its indexed headers (none if not storable)."""
    values = header_values(headers)
    return {} if values is None else {"sh": values, "shv": HEADERS_VERSION}


def to_filter(cond: Cond) -> Doc:
    if isinstance(cond, Const):
        return {} if cond.value else NOTHING
    if isinstance(cond, HasFlag):
        canonical = SYSTEM_FLAGS.get(cond.flag)
        if canonical is not None:
            # System flags are stored in their canonical spelling (validation.flag).
            return {"flags": canonical}
        return {"flags": {"$regex": f"^{literal(cond.flag)}$", "$options": "i"}}
    if isinstance(cond, UidIn):
        ranges: list[Doc] = [{"uid": {"$gte": lo, "$lte": hi}} for lo, hi in cond.spans]
        if not ranges:
            return NOTHING
        return ranges[0] if len(ranges) == 1 else {"$or": ranges}
    if isinstance(cond, Compare):
        # A missing or null sent_day matches no comparison with a number, as in the evaluator.
        if cond.op == "=":
            return {cond.column: cond.value}
        return {cond.column: {_OPS[cond.op]: cond.value}}
    if isinstance(cond, HeaderHas):
        pattern = f"^{literal(cond.name)}:"
        if cond.needle:
            pattern += f"[\\s\\S]*{literal(cond.needle)}"
        return {"sh": {"$regex": pattern}}
    if isinstance(cond, AllOf):
        return {"$and": [to_filter(p) for p in cond.parts]} if cond.parts else {}
    if isinstance(cond, AnyOf):
        return {"$or": [to_filter(p) for p in cond.parts]} if cond.parts else NOTHING
    if isinstance(cond, Negate):
        return {"$nor": [to_filter(cond.part)]}
    raise TypeError(f"unknown condition {cond!r}")
