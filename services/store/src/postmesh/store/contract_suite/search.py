"""Contract: SEARCH answered in the backend's query (``search.plan``) gives exactly what the
Python evaluator gives, for every key kind, NOT/OR combinations, non-ASCII text and LIKE or
regex metacharacters in search strings."""

from __future__ import annotations

from postmesh.api.store.v1 import store_pb2
from postmesh.store import indexing, search
from postmesh.store.contract_suite.helpers import deliver
from postmesh.store.model import INBOX, FlagsMode
from postmesh.store.repository import StoreRepository

DAY = 86_400
Key = store_pb2.SearchKey


def _mail(headers: str, body: str = "hello") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body + "\r\n").encode()


# (raw message, flags, internal date): every header shape the indexed fields must match alike.
CORPUS: list[tuple[bytes, list[str], int]] = [
    (
        _mail(
            "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>\nTo: Bob <bob@example.org>\n"
            "Subject: =?utf-8?q?Stra=C3=9Fenfest?= invitation\nDate: Mon, 3 Mar 2025 10:00:00 +0000\n"
        ),
        ["\\Seen", "$Party"],
        10 * DAY,
    ),
    (
        _mail(
            "From: alice@example.org\nTo: bob@example.org\nTo: carol@example.org\n"
            "Cc: dave@example.net\nSubject: Discount 50% off_now \\o/ [sale] (.*)\n"
            "Date: Tue, 4 Mar 2025 10:00:00 +0000\n"
        ),
        ["\\Flagged", "$party"],
        10 * DAY + 3600,
    ),
    (
        # Raw UTF-8 in the header (RFC 6532) and no Date header at all.
        "From: Zoë <zoe@example.org>\r\nTo: bob@example.org\r\nSubject: Größe ǅemal ﬁne\r\n"
        "\r\nbody\r\n".encode(),
        ["\\Answered", "\\Draft"],
        11 * DAY,
    ),
    (
        # No Subject; Bcc kept by the sender's copy.
        _mail(
            "From: bob@example.org\nTo: alice@example.org\nBcc: secret@example.com\n"
            "Date: Wed, 5 Mar 2025 10:00:00 +0000\n",
            "x" * 3000,
        ),
        ["\\Deleted", "\\Seen"],
        12 * DAY,
    ),
    (
        # Empty Subject and a percent sign that would be a LIKE wildcard.
        _mail(
            'From: "100%_sure\\\\" <sure@example.org>\nTo: bob@example.org\nSubject:\n'
            "Date: Wed, 5 Mar 2025 23:59:59 +0000\n"
        ),
        [],
        13 * DAY - 1,
    ),
]


def hdr(name: str, value: str) -> Key:
    return Key(header=store_pb2.HeaderMatch(name=name, value=value))


def _group(kind: str, keys: tuple[Key, ...]) -> Key:
    key = Key()
    getattr(key, kind).keys.extend(keys)
    return key


def all_of(*keys: Key) -> Key:
    return _group("and", keys)


def any_of(*keys: Key) -> Key:
    return _group("or", keys)


def not_(inner: Key) -> Key:
    key = Key()
    getattr(key, "not").CopyFrom(inner)
    return key


def uid_set(*ranges: tuple[int, int]) -> Key:
    return Key(
        uid=store_pb2.UidRangeList(ranges=[store_pb2.UidRange(first=a, last=b) for a, b in ranges])
    )


# Key -> the UIDs it must find in CORPUS (checked against the evaluator as well).
CASES: list[tuple[Key, list[int]]] = [
    (Key(flag_set="\\Seen"), [1, 4]),
    (Key(flag_unset="\\SEEN"), [2, 3, 5]),
    (Key(flag_set="\\flagged"), [2]),
    (Key(flag_set="\\Answered"), [3]),
    (Key(flag_set="\\Draft"), [3]),
    (Key(flag_set="\\Deleted"), [4]),
    (Key(flag_unset="\\Deleted"), [1, 2, 3, 5]),
    (Key(flag_set="$PARTY"), [1, 2]),  # keywords compare case-insensitively
    (Key(flag_unset="$party"), [3, 4, 5]),
    (Key(flag_set="$part"), []),
    (Key(flag_set="\\Recent"), []),
    (Key(flag_set="ǅ"), []),
    (hdr("subject", "STRASSE"), [1]),  # "ß" folds to "ss"
    (hdr("subject", "straßen"), [1]),
    (hdr("subject", "größe"), [3]),
    (hdr("subject", "GRÖSSE"), [3]),
    (hdr("subject", "dž"), [3]),  # title-case digraph, folded
    (hdr("subject", "fine"), [3]),  # the "ﬁ" ligature, NFKC
    (hdr("subject", "50%"), [2]),
    (hdr("subject", "%"), [2]),
    (hdr("subject", "_"), [2]),
    (hdr("subject", "off_now"), [2]),
    (hdr("subject", "\\o/"), [2]),
    (hdr("subject", "[sale]"), [2]),
    (hdr("subject", "(.*)"), [2]),
    (hdr("subject", ".*"), [2]),
    (hdr("subject", "o%f"), []),
    (hdr("subject", "d_scount"), []),
    (hdr("subject", ""), [1, 2, 3, 5]),  # "" = the field is present (even empty)
    (not_(hdr("subject", "")), [4]),
    (hdr("from", "JÖRG"), [1]),
    (hdr("from", "100%_sure\\"), [5]),
    (hdr("from", "zoë"), [3]),
    (hdr("to", "carol"), [2]),  # the second To field
    (hdr("to", "bob@example.org"), [1, 2, 3, 5]),
    (hdr("cc", "dave"), [2]),
    (hdr("bcc", "secret"), [4]),
    (hdr("BCC", ""), [4]),
    (hdr("date", "2025"), [1, 2, 4, 5]),  # not an indexed field: the evaluator's
    (hdr("x-none", ""), []),
    (hdr("subject", "zzz\x00"), []),
    (not_(hdr("subject", "invitation")), [2, 3, 4, 5]),
    (any_of(hdr("subject", "invitation"), Key(flag_set="\\Draft")), [1, 3]),
    (any_of(hdr("subject", "sale"), Key(body="xxxx")), [2, 4]),
    (all_of(Key(flag_unset="\\Seen"), not_(hdr("from", "alice"))), [3, 5]),
    (not_(any_of(hdr("to", "carol"), not_(Key(flag_set="\\Seen")))), [1, 4]),
    (all_of(hdr("from", "example.org"), Key(body="hello")), [2, 5]),
    (all_of(uid_set((2, 4)), any_of(hdr("cc", "dave"), hdr("bcc", "secret"))), [2, 4]),
    (Key(text="jörg"), [1]),
    (Key(since=11), [3, 4, 5]),
    (Key(on=10), [1, 2]),
    (Key(on=12), [4, 5]),
    (Key(before=11), [1, 2]),
    (not_(Key(on=10)), [3, 4, 5]),
    (Key(sent_on=20150), [1]),  # 2025-03-03
    (Key(sent_before=20151), [1]),
    (not_(Key(sent_before=20151)), [2, 3, 4, 5]),  # no Date: not before, so NOT matches
    (Key(sent_since=20151), [2, 4, 5]),
    (not_(Key(sent_since=20151)), [1, 3]),
    (Key(sent_on=20152), [4, 5]),
    (Key(larger=2000), [4]),
    (Key(smaller=2000), [1, 2, 3, 5]),
    (Key(larger=2**64 - 1), []),
    (Key(smaller=2**64 - 1), [1, 2, 3, 4, 5]),
    (Key(modseq=2**63), []),
    (uid_set((2, 3), (5, 0)), [2, 3, 5]),
    (uid_set((9, 0)), [5]),
    (uid_set(*[(u, u) for u in range(1, 300, 2)]), [1, 3, 5]),  # more spans than a query holds
    (not_(uid_set((1, 3))), [4, 5]),
    (any_of(Key(all=True), hdr("subject", "x")), [1, 2, 3, 4, 5]),
    (not_(Key(all=True)), []),
]


class SearchContract:
    async def test_search_pushdown_matches_evaluator(self, repo: StoreRepository) -> None:
        for n, (raw, flags, internal_date) in enumerate(CORPUS):
            await deliver(repo, f"s{n}", "u", raw, flags=flags, internal_date=internal_date)
        messages, _ = await repo.list_messages("u", INBOX, 0, 100)
        reference = []
        for m, (raw, _, _) in zip(messages, CORPUS, strict=True):
            index = indexing.index_content(raw)
            reference.append(
                search.SearchableMessage(
                    m.uid, m.flags, m.internal_date, m.size, m.modseq, index.sent_day,
                    index.search,
                )
            )  # fmt: skip
        ctx = search.SearchContext(max_uid=messages[-1].uid)
        deep = hdr("subject", "sale")
        for _ in range(40):  # deeper than a backend's query nests: the evaluator's
            deep = not_(not_(deep))
        for key, expected in [*CASES, (deep, [2])]:
            got = await repo.search("u", INBOX, key)
            assert got.uids == search.search(key, reference, ctx), key
            assert got.uids == expected, key
            modseqs = [m.modseq for m in messages if m.uid in expected]
            assert got.highest_modseq == max(modseqs, default=0), key

    async def test_search_follows_flag_changes_and_copies(self, repo: StoreRepository) -> None:
        for n, (raw, flags, internal_date) in enumerate(CORPUS[:3]):
            await deliver(repo, f"s{n}", "u", raw, flags=flags, internal_date=internal_date)
        await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Seen", "$Later"])
        await repo.store_flags("u", INBOX, [1], FlagsMode.REMOVE, ["\\Seen"])
        assert (await repo.search("u", INBOX, Key(flag_set="\\Seen"))).uids == [2]
        assert (await repo.search("u", INBOX, Key(flag_set="$later"))).uids == [2]
        await repo.copy_messages("u", INBOX, [1, 3], "Archive")
        assert (await repo.search("u", "Archive", hdr("subject", "strasse"))).uids == [1]
        assert (await repo.search("u", "Archive", hdr("from", "zoë"))).uids == [2]
        await repo.move_messages("u", INBOX, [2], "Trash")
        assert (await repo.search("u", "Trash", hdr("subject", "50%"))).uids == [1]
        assert (await repo.search("u", INBOX, hdr("subject", "50%"))).uids == []

    async def test_folded_headers_and_part_headers(self, repo: StoreRepository) -> None:
        """A folded header is searched with its blanks as one space (a folded Subject found by
        the words as shown); TEXT also looks at the parts' MIME headers, so an attachment's
        name finds its message, and BODY does not (as Dovecot answers)."""
        folded = _mail(
            "From: a@example.org\nSubject: Quarterly\n   report   for\n\tMarch", "plain body"
        )
        attached = (
            b"From: a@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n"
            b'--b\r\nContent-Type: application/pdf; name="invoice-2026.pdf"\r\n'
            b'Content-Disposition: attachment;\r\n filename="invoice-2026.pdf"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
        )
        await deliver(repo, "f1", "u", folded)
        await deliver(repo, "f2", "u", attached)
        for key, expected in [
            (hdr("subject", "quarterly report for march"), [1]),
            (hdr("subject", "report for"), [1]),
            (Key(text="report for march"), [1]),
            (Key(text="invoice-2026.pdf"), [2]),
            (Key(text="application/pdf"), [2]),
            (Key(text='content-type: application/pdf; name="invoice'), [2]),
            (Key(body="invoice-2026.pdf"), []),
            (Key(body="see the attachment"), [2]),
            (Key(text="see the attachment"), [2]),
        ]:
            assert (await repo.search("u", INBOX, key)).uids == expected, key
