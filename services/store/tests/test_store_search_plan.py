"""search.plan: which part of a SEARCH the backend query answers, and the translations of the
pushed conditions (SQL on SQLite, filters on MongoDB) that the contract suite runs for real."""

from __future__ import annotations

import re
import sqlite3

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mongodb import search_filter
from postmesh.store.search import Limits, plan
from postmesh.store.search.plan import (
    AllOf,
    AnyOf,
    Compare,
    Const,
    HasFlag,
    HeaderHas,
    Negate,
    UidIn,
)
from postmesh.store.sqlite import search_sql

K = store_pb2.SearchKey


def hdr(name: str, value: str) -> K:
    return K(header=store_pb2.HeaderMatch(name=name, value=value))


def group(kind: str, *keys: K) -> K:
    key = K()
    getattr(key, kind).keys.extend(keys)
    return key


def not_(inner: K) -> K:
    key = K()
    getattr(key, "not").CopyFrom(inner)
    return key


def view(last: int) -> K:
    return K(uid=store_pb2.UidRangeList(ranges=[store_pb2.UidRange(first=1, last=last)]))


def test_gateway_criteria_are_pushed_down_whole() -> None:
    # imap-gw sends AND(its UID view, the client's criteria).
    p = plan(group("and", view(50), group("and", K(flag_unset="\\Seen"), hdr("Subject", "Ä"))), 60)
    assert p.pushed == AllOf(
        (UidIn(((1, 50),)), Negate(HasFlag("\\seen")), HeaderHas("subject", "ä"))
    )
    assert (p.residual, p.uses_headers, p.residual_needs_document) == (None, True, False)


def test_body_text_and_unindexed_headers_stay_with_the_evaluator() -> None:
    body = K(body="x")
    p = plan(group("and", view(0), body, hdr("x-spam", "yes")), 7)
    assert p.pushed == UidIn(((1, 7),))
    assert p.residual == group("and", body, hdr("x-spam", "yes"))
    assert p.residual_needs_document and not p.uses_headers
    # An OR with one key the backend cannot answer is evaluated whole.
    either = group("or", K(flag_set="\\Flagged"), K(text="x"))
    p = plan(either, 7)
    assert (p.pushed, p.residual) == (Const(True), either)


def test_or_chains_are_flattened_and_depth_is_bounded() -> None:
    chain = hdr("from", "a")
    for name in ("b", "c", "d"):
        chain = group("or", hdr("from", name), chain)
    p = plan(chain, 1)
    assert p.pushed == AnyOf(tuple(HeaderHas("from", n) for n in "dcba"))
    deep = K(flag_set="\\Seen")
    for _ in range(3):
        deep = not_(deep)
    assert plan(deep, 1, Limits(max_depth=3)).residual == deep
    assert plan(deep, 1, Limits(max_depth=4)).residual is None


def test_values_beyond_64_bits_are_decided_in_the_plan() -> None:
    assert plan(K(larger=2**64 - 1), 1).pushed == Const(False)
    assert plan(K(smaller=2**64 - 1), 1).pushed == Const(True)
    assert plan(K(modseq=2**63), 1).pushed == Const(False)
    assert plan(K(larger=5), 1).pushed == Compare("size", ">", 5)
    assert plan(K(on=2), 1).pushed == AllOf(
        (Compare("internal_date", ">=", 172800), Compare("internal_date", "<", 259200))
    )


def test_backend_limits_keep_keys_for_the_evaluator() -> None:
    many = K(
        uid=store_pb2.UidRangeList(
            ranges=[store_pb2.UidRange(first=u, last=u) for u in range(1, 400, 2)]
        )
    )
    assert plan(many, 400, search_sql.LIMITS).residual == many
    nul = hdr("subject", "a\x00b")
    assert plan(nul, 1, search_filter.LIMITS).residual == nul
    assert plan(nul, 1, search_sql.LIMITS).residual is None
    assert plan(K(flag_set="ǅ"), 1, search_filter.LIMITS).residual == K(flag_set="ǅ")


def test_sql_is_two_valued_and_stays_within_parser_limits() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE messages (uid, sent_day)")
    conn.executemany("INSERT INTO messages VALUES (?, ?)", [(1, None), (2, 5), (3, 9)])
    params: search_sql.Params = []
    where = search_sql.to_sql(Negate(Compare("sent_day", "<", 6)), params)
    got = conn.execute(f"SELECT m.uid FROM messages m WHERE {where}", params).fetchall()
    assert got == [(1,), (3,)]  # no Date: "not sent before" holds, as in the evaluator
    wide = AnyOf(tuple(Compare("sent_day", "=", n) for n in range(1000)))
    params = []
    where = search_sql.to_sql(Negate(Negate(wide)), params)
    got = conn.execute(f"SELECT m.uid FROM messages m WHERE {where}", params).fetchall()
    assert got == [(2,), (3,)]


def test_regex_literal_matches_only_itself() -> None:
    # Python's re reads \xHH as PCRE (MongoDB) and RE2 (FerretDB) do.
    for text in ["50%", "a_b", "\\o/", "(.*)", "[x]", "a+b?", "^$|{1}", "straße", " \n\t"]:
        pattern = search_filter.literal(text)
        assert re.fullmatch(pattern, text), text
        assert not re.search(pattern, text.replace(text[0], "z", 1)), text
    assert search_filter.to_filter(HeaderHas("subject", "")) == {"sh": {"$regex": "^subject:"}}
