"""IMAP SEARCH semantics (RFC 9051 §6.4.4) of postmesh.store.search over real messages."""

from __future__ import annotations

import calendar
import datetime

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime import extract_meta, sent_day
from postmesh.store.search import (
    SearchableMessage,
    SearchContext,
    SearchDocument,
    build_search_document,
    encode_search_doc,
    matches,
    matching,
    needs_document,
    needs_headers,
    needs_text,
    search,
    validate,
)

K = store_pb2.SearchKey
CTX = SearchContext(max_uid=9)


def day(y: int, m: int, d: int) -> int:
    return (datetime.date(y, m, d) - datetime.date(1970, 1, 1)).days


def ts(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    return calendar.timegm((y, m, d, hh, mm, ss))


def header(name: str, value: str) -> K:
    return K(header=store_pb2.HeaderMatch(name=name, value=value))


def _list(kind: str, keys: tuple[K, ...]) -> K:
    key = K()
    getattr(key, kind).SetInParent()  # "and"/"or" are Python keywords: no constructor args
    getattr(key, kind).keys.extend(keys)
    return key


def all_of(*keys: K) -> K:
    return _list("and", keys)


def any_of(*keys: K) -> K:
    return _list("or", keys)


def not_(inner: K) -> K:
    key = K()
    getattr(key, "not").CopyFrom(inner)
    return key


def uids(*ranges: tuple[int, int]) -> K:
    return K(
        uid=store_pb2.UidRangeList(ranges=[store_pb2.UidRange(first=a, last=b) for a, b in ranges])
    )


RAW = {
    1: (
        b"From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        b"Cc: team: carol@example.org;\r\n"
        b"Subject: =?utf-8?q?Stra=C3=9Fenfest?= invitation\r\n"
        b"Date: Mon, 3 Mar 2025 23:30:00 -1100\r\n"
        b"X-Mailer: Thunderbird\r\n"
        b"\r\n"
        b"Come to the street party on Saturday.\r\n"
    ),
    2: (
        b"From: Alice <alice@example.net>\r\n"
        b"To: joerg@example.com\r\n"
        b"Bcc: hidden@example.net\r\n"
        b"Subject: Re: invitation\r\n"
        b"Date: Tue, 4 Mar 2025 09:00:00 +0100\r\n"
        b'Content-Type: multipart/alternative; boundary="a"\r\n'
        b"\r\n"
        b"--a\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gerne! Ich bringe Kuchen mit. Caf=C3=A9 au lait?\r\n"
        b"--a\r\nContent-Type: text/html\r\n\r\n<p>Gerne!</p>\r\n"
        b"--a--\r\n"
    ),
    3: b"Subject: no date, no from\r\n\r\nplain body with UNIQUEWORD\r\n",
}


def message(
    uid: int,
    flags: tuple[str, ...] = (),
    internal: int = 0,
    size: int | None = None,
    modseq: int = 1,
    lazy: list[int] | None = None,
) -> SearchableMessage:
    raw = RAW[uid]
    meta = extract_meta(raw)
    encoded = encode_search_doc(build_search_document(raw, meta))

    def load() -> bytes:
        assert lazy is not None
        lazy.append(uid)
        return encoded

    return SearchableMessage(
        uid=uid,
        flags=flags,
        internal_date=internal,
        size=len(raw) if size is None else size,
        modseq=modseq,
        sent_day=sent_day(meta),
        document=load if lazy is not None else encoded,
    )


@pytest.fixture
def box() -> list[SearchableMessage]:
    return [
        message(1, ("\\Seen", "$Important"), ts(2025, 3, 3, 23, 59, 59), 1000, 5),
        message(2, ("\\Answered",), ts(2025, 3, 4, 0, 0, 0), 2000, 7),
        message(3, (), ts(2025, 3, 5, 12), 3000, 9),
    ]


def run(key: K, box: list[SearchableMessage], ctx: SearchContext = CTX) -> list[int]:
    return search(key, box, ctx)


def test_all_and_flags(box: list[SearchableMessage]) -> None:
    assert run(K(all=True), box) == [1, 2, 3]
    assert run(K(flag_set="\\Seen"), box) == [1]
    assert run(K(flag_set="\\SEEN"), box) == [1]  # flags are atoms: case-insensitive
    assert run(K(flag_unset="\\Seen"), box) == [2, 3]
    assert run(K(flag_set="$important"), box) == [1]
    assert run(K(flag_set="\\Deleted"), box) == []


def test_internal_date_keys_compare_utc_days(box: list[SearchableMessage]) -> None:
    # Message 1 arrived at 23:59:59 UTC on 3 March, message 2 at 00:00:00 on 4 March.
    assert run(K(on=day(2025, 3, 3)), box) == [1]
    assert run(K(on=day(2025, 3, 4)), box) == [2]
    assert run(K(before=day(2025, 3, 4)), box) == [1]  # strictly before the day
    assert run(K(since=day(2025, 3, 4)), box) == [2, 3]  # the day itself included
    assert run(K(since=day(2025, 3, 6)), box) == []
    old = SearchableMessage(uid=4, flags=(), internal_date=-1, size=1, modseq=1)
    assert matches(K(on=day(1969, 12, 31)), old, CTX)


def test_sent_date_keys_use_the_date_header(box: list[SearchableMessage]) -> None:
    # Message 1's Date is 3 March at -1100 (4 March in UTC): SENTON uses the date as written.
    assert run(K(sent_on=day(2025, 3, 3)), box) == [1]
    assert run(K(sent_on=day(2025, 3, 4)), box) == [2]
    assert run(K(sent_before=day(2025, 3, 4)), box) == [1]
    assert run(K(sent_since=day(2025, 3, 4)), box) == [2]
    # Message 3 has no Date header: no SENT* key matches it, either way round.
    assert run(not_(K(sent_since=day(2000, 1, 1))), box) == [3]


def test_size_keys_are_strict(box: list[SearchableMessage]) -> None:
    assert run(K(larger=2000), box) == [3]
    assert run(K(larger=1999), box) == [2, 3]
    assert run(K(smaller=2000), box) == [1]
    assert run(K(smaller=0), box) == []


def test_header_keys(box: list[SearchableMessage]) -> None:
    # FROM/TO/CC/BCC/SUBJECT arrive as HeaderMatch on the decoded value, address included.
    assert run(header("FROM", "jörg"), box) == [1]
    assert run(header("From", "JÖRG MÜLLER"), box) == [1]
    assert run(header("from", "example.NET"), box) == [2]
    assert run(header("to", "joerg@example.com"), box) == [2]
    assert run(header("cc", "carol"), box) == [1]
    assert run(header("cc", "team"), box) == [1]
    assert run(header("bcc", "hidden"), box) == [2]
    # Unicode case folding: "STRASSE" matches the decoded "Straßenfest".
    assert run(header("subject", "STRASSENFEST"), box) == [1]
    assert run(header("subject", "invitation"), box) == [1, 2]
    assert run(header("subject", "=?utf-8"), box) == []  # decoded, not raw
    assert run(header("x-mailer", "thunder"), box) == [1]
    # An empty value matches every message that has the field at all.
    assert run(header("date", ""), box) == [1, 2]
    assert run(header("x-absent", ""), box) == []


def test_body_and_text_keys(box: list[SearchableMessage]) -> None:
    assert run(K(body="street party"), box) == [1]
    assert run(K(body="CAFÉ AU LAIT"), box) == [2]  # quoted-printable and charset decoded
    assert run(K(body="cafe"), box) == []
    assert run(K(body="uniqueword"), box) == [3]
    assert run(K(body="invitation"), box) == []  # the subject is not body
    assert run(K(text="invitation"), box) == [1, 2]  # TEXT is header and body
    assert run(K(text="uniqueword"), box) == [3]
    assert run(K(text="bob@example.org"), box) == [1]
    assert run(K(text="x-mailer: thunderbird"), box) == [1]
    assert run(K(body=""), box) == [1, 2, 3]


def test_uid_sets(box: list[SearchableMessage]) -> None:
    assert run(uids((1, 1)), box) == [1]
    assert run(uids((2, 3)), box) == [2, 3]
    assert run(uids((3, 2)), box) == [2, 3]  # a range is the same either way round
    assert run(uids((1, 1), (3, 3)), box) == [1, 3]
    assert run(uids((2, 0)), box) == [2, 3]  # 2:*
    # RFC 9051 §6.4.8: 559:* includes the highest UID even though 559 exceeds it.
    assert run(uids((559, 0)), box, SearchContext(max_uid=3)) == [3]
    assert run(uids((4, 8)), box) == []
    many = uids(*[(i, i) for i in range(1, 200_004, 2)])
    with pytest.raises(ValueError):
        validate(many)
    assert run(uids(*[(i, i) for i in range(1, 100_000, 2)]), box) == [1, 3]


def test_modseq(box: list[SearchableMessage]) -> None:
    # RFC 7162 §3.1.5: MODSEQ n matches messages whose mod-sequence is n or greater.
    assert run(K(modseq=7), box) == [2, 3]
    assert run(K(modseq=10), box) == []


def test_nesting(box: list[SearchableMessage]) -> None:
    assert run(all_of(K(flag_unset="\\Seen"), header("subject", "invitation")), box) == [2]
    assert run(any_of(K(flag_set="\\Seen"), K(larger=2500)), box) == [1, 3]
    assert run(not_(any_of(K(flag_set="\\Seen"), K(larger=2500))), box) == [2]
    assert run(not_(not_(K(flag_set="\\Seen"))), box) == [1]
    deep = all_of(
        any_of(uids((1, 2)), K(body="uniqueword")),
        not_(all_of(K(flag_set="\\Answered"), K(modseq=7))),
    )
    assert run(deep, box) == [1, 3]
    assert run(all_of(K(all=True)), box) == [1, 2, 3]
    assert [m.uid for m in matching(K(larger=1500), box, CTX)] == [2, 3]


def test_search_returns_ascending_uids(box: list[SearchableMessage]) -> None:
    assert run(K(all=True), list(reversed(box))) == [1, 2, 3]


def test_document_is_loaded_only_when_needed() -> None:
    loaded: list[int] = []
    box = [
        message(1, ("\\Seen",), lazy=loaded),
        message(2, (), lazy=loaded),
        message(3, ("\\Seen",), lazy=loaded),
    ]
    assert search(any_of(K(flag_set="\\Seen"), K(larger=1)), box, CTX) == [1, 2, 3]
    assert loaded == []
    # Cheap keys in an AND run first, so only \Seen messages need their document; and the
    # document of a message is loaded once however many keys use it.
    key = all_of(K(body="uniqueword"), header("subject", "date"), K(flag_set="\\Seen"))
    assert search(key, box, CTX) == [3]
    assert sorted(loaded) == [1, 3]


def test_needs_helpers() -> None:
    assert not needs_text(K(all=True)) and not needs_headers(K(all=True))
    assert not needs_document(all_of(K(flag_set="x"), uids((1, 0)), K(sent_on=3)))
    assert needs_text(not_(K(body="x"))) and not needs_headers(K(body="x"))
    assert needs_headers(any_of(K(all=True), header("from", "a")))
    assert not needs_text(header("from", "a"))
    assert needs_text(K(text="x")) and needs_headers(K(text="x"))
    assert needs_document(all_of(K(all=True), not_(K(text="x"))))


def test_missing_or_corrupt_document_searches_as_empty() -> None:
    bare = SearchableMessage(uid=1, flags=(), internal_date=0, size=1, modseq=1)
    corrupt = SearchableMessage(
        uid=2, flags=(), internal_date=0, size=1, modseq=1, document=b"junk"
    )
    given = SearchableMessage(
        uid=3,
        flags=(),
        internal_date=0,
        size=1,
        modseq=1,
        document=SearchDocument(headers={"subject": ["Hello"]}, text="World"),
    )
    box = [bare, corrupt, given]
    assert search(header("subject", ""), box, CTX) == [3]
    assert search(K(text="hello"), box, CTX) == [3]
    assert search(K(body="world"), box, CTX) == [3]
    assert search(not_(K(body="world")), box, CTX) == [1, 2]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (K(), "no criterion"),
        (all_of(), "AND needs at least one"),
        (any_of(), "OR needs at least one"),
        (not_(K()), "no criterion"),
        (all_of(K(all=True), any_of()), "OR needs at least one"),
        (header("", "x"), "invalid header field name"),
        (header("Sub ject", "x"), "invalid header field name"),
        (header("Subject:", "x"), "invalid header field name"),
        (K(flag_set=""), "empty flag"),
        (K(uid=store_pb2.UidRangeList()), "empty UID set"),
        (uids((0, 5)), "UIDs start at 1"),
    ],
)
def test_validation_errors(key: K, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(key)
    with pytest.raises(ValueError, match=message):
        search(key, [], CTX)


def test_depth_and_size_limits() -> None:
    key = K(all=True)
    for _ in range(99):
        key = not_(key)
    validate(key)  # 100 levels are fine
    with pytest.raises(ValueError, match="nested deeper than 100"):
        validate(not_(key))
    wide = all_of(*[K(flag_set=f"k{i}") for i in range(1000)])
    with pytest.raises(ValueError, match="more than 1000 keys"):
        validate(wide)
    validate(all_of(*[K(flag_set=f"k{i}") for i in range(999)]))
