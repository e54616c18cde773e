"""A search plan's pushed conditions (``search.plan``) as an SQL expression over ``messages m``.

Every expression is two-valued (0 or 1, never NULL), so NOT gives the evaluator's answer also
for a message without a Date header. Header values are stored folded, as UTF-8 BLOBs, and
matched with ``instr`` on bytes: an exact substring test (UTF-8 is self-synchronising), with no
LIKE pattern to escape and no collation in the way.
"""

from __future__ import annotations

from postmesh.store.search import Limits
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
from postmesh.store.validation import DELETED, SEEN

# "m.uid BETWEEN" terms per query (more spans are filtered by the evaluator); conditions nested
# deeper than this stay with the evaluator, below the parser's stack limit.
LIMITS = Limits(max_uid_spans=100, max_depth=10)
_RUN = 200

# Flags mirrored as columns (kept for counts and EXPUNGE); any other flag is looked up in the
# JSON array of flags.
_FLAG_COLUMNS = {SEEN.lower(): "m.seen", DELETED.lower(): "m.deleted"}

Params = list[int | str | bytes]
# blob_headers row name that marks a content as indexed (a field name is never empty).
INDEXED_MARK = ""
UNINDEXED = "NOT EXISTS (SELECT 1 FROM blob_headers x WHERE x.blob_id = m.blob_id AND x.name = '')"
# store_facts row present when some message may lack header rows (schema.py, ADR 0065).
UNINDEXED_FACT = "unindexed_messages"


def encode_text(value: str) -> bytes:
    """How header values and needles are stored and compared (lone surrogates included)."""
    return value.encode("utf-8", "surrogatepass")


def _join(parts: list[str], op: str) -> str:
    # Flat runs in one pair of parentheses: SQLite's parser overflows at a few dozen nested
    # parentheses, and its expression tree may be at most 1000 deep.
    if len(parts) > _RUN:
        parts = [_join(parts[i : i + _RUN], op) for i in range(0, len(parts), _RUN)]
    return "(" + f" {op} ".join(parts) + ")"


def to_sql(cond: Cond, params: Params) -> str:
    """The expression for ``cond``; its parameters are appended to ``params``."""
    if isinstance(cond, Const):
        return "1" if cond.value else "0"
    if isinstance(cond, HasFlag):
        column = _FLAG_COLUMNS.get(cond.flag)
        if column is not None:
            return f"{column} = 1"
        params.append(cond.flag)
        # Flags are 7-bit atoms (validation.flag), so SQLite's ASCII lower() is exact.
        return "EXISTS (SELECT 1 FROM json_each(m.flags) f WHERE lower(f.value) = ?)"
    if isinstance(cond, UidIn):
        if not cond.spans:
            return "0"
        for lo, hi in cond.spans:
            params += [lo, hi]
        return _join(["m.uid BETWEEN ? AND ?"] * len(cond.spans), "OR")
    if isinstance(cond, Compare):
        params.append(cond.value)
        if cond.column == "sent_day":
            return f"(m.sent_day IS NOT NULL AND m.sent_day {cond.op} ?)"
        return f"m.{cond.column} {cond.op} ?"
    if isinstance(cond, HeaderHas):
        params.append(cond.name)
        sql = "EXISTS (SELECT 1 FROM blob_headers h WHERE h.blob_id = m.blob_id AND h.name = ?"
        if cond.needle:
            params.append(encode_text(cond.needle))
            sql += " AND instr(h.value, ?) > 0"
        return sql + ")"
    if isinstance(cond, AllOf):
        return _join([to_sql(p, params) for p in cond.parts], "AND") if cond.parts else "1"
    if isinstance(cond, AnyOf):
        return _join([to_sql(p, params) for p in cond.parts], "OR") if cond.parts else "0"
    if isinstance(cond, Negate):
        return f"NOT ({to_sql(cond.part, params)})"
    raise TypeError(f"unknown condition {cond!r}")
