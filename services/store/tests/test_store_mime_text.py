"""What SEARCH reads: header_index, search_text and sent_date in postmesh.store.mime."""

from __future__ import annotations

import base64
import datetime
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from postmesh.store.mime import (
    extract_meta,
    header_index,
    part_headers_text,
    search_text,
    sent_date,
    sent_day,
)
from postmesh.store.mime.text import collapse_blank_lines

MIXED = (
    b"From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>\r\n"
    b"To: Bob <bob@example.org>,\r\n"
    b" team: carol@example.org;\r\n"
    b"Subject: =?utf-8?b?UXVhcnRhbHNiZXJpY2h0?= Q1\r\n"
    b"X-Spam.Score: 1.5\r\n"
    b"Received: from a\r\n"
    b"Received: from b\r\n"
    b"Date: Mon, 3 Mar 2025 23:30:00 -1100\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=FC=DFe, this line is soft=\r\n"
    b"-broken.\r\n"
    b"--b\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes(
        "<html><style>p {color: red}</style><p>Caf\u00e9 &amp; <b>cr\u00e8me</b></p></html>".encode()
    ).replace(b"\n", b"\r\n")
    + b"--b\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(b"SECRET-BINARY-MARKER") + b"--b\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: =?utf-8?q?inner_=C3=A9?=\r\n"
    b"\r\n"
    b"inner body text\r\n"
    b"--b--\r\n"
)


def test_header_index_decodes_unfolds_and_keeps_order() -> None:
    index = header_index(extract_meta(MIXED))
    assert index["from"] == ["Jörg Müller <joerg@example.com>"]
    assert index["to"] == ["Bob <bob@example.org>, team: carol@example.org;"]
    assert index["subject"] == ["Quartalsbericht Q1"]
    assert index["received"] == ["from a", "from b"]
    assert index["x-spam.score"] == ["1.5"]  # dots in names are fine here
    assert "content-transfer-encoding" not in index  # only the message header
    assert header_index(b"X-A: 1\r\nx-a: 2\r\n\r\n") == {"x-a": ["1", "2"]}
    assert header_index(b"") == {}


def test_header_index_is_bounded() -> None:
    block = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(1000)) + b"\r\n"
    index = header_index(block)
    assert 100 < len(index) < 300
    assert sum(len(v) for values in index.values() for v in values) <= 256 * 1024
    huge = header_index(b"Subject: " + b"z" * 100_000 + b"\r\n\r\n")
    assert len(huge["subject"][0]) == 16 * 1024


def test_search_text_decodes_text_parts_only() -> None:
    meta = extract_meta(MIXED)
    text = search_text(MIXED, meta)
    assert text.split("\n") == [
        "Grüße, this line is soft-broken.",  # QP soft break joined, latin-1 decoded
        "Café & crème",  # HTML: base64 and utf-8 decoded, markup and style dropped
        "Subject: inner é",  # the embedded message's header, decoded
        "inner body text",
    ]
    assert "SECRET" not in text  # attachments are not text


def test_search_text_limit_and_bad_encodings() -> None:
    raw = b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(b"abc " * 100_000)
    meta = extract_meta(raw)
    assert search_text(raw, meta, limit=1000) == "abc " * 250
    assert len(search_text(raw, meta)) == 400_000 - 1
    broken = b"Content-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!w6k=*\r\nx"
    assert search_text(broken, extract_meta(broken)) == "é"
    latin = b'Content-Type: text/plain; charset="windows-1252"\r\n\r\n\x93quoted\x94 \x80'
    assert search_text(latin, extract_meta(latin)) == "\u201cquoted\u201d \u20ac"
    utf8_unlabelled = "naïve café".encode()
    assert (
        search_text(b"\r\n" + utf8_unlabelled, extract_meta(b"\r\n" + utf8_unlabelled))
        == "naïve café"
    )
    assert search_text(b"", extract_meta(b"")) == ""


def test_sent_date_uses_the_header_zone() -> None:
    meta = extract_meta(MIXED)
    # 23:30 at -1100 is already 4 March in UTC; SENTON compares the date as written.
    assert sent_date(meta) == datetime.date(2025, 3, 3)
    assert sent_day(meta) == (datetime.date(2025, 3, 3) - datetime.date(1970, 1, 1)).days
    rfc = extract_meta(b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\r\n")
    assert sent_date(rfc) == datetime.date(1996, 7, 17)
    assert sent_date(extract_meta(b"Date: 3 Mar 99 10:00 GMT\r\n\r\n")) == datetime.date(1999, 3, 3)
    for bad in (
        b"Date: yesterday\r\n\r\n",
        b"Date: 31 Feb 2020 10:00 +0000\r\n\r\n",
        b"Date:\r\n\r\n",
        b"X: y\r\n\r\n",
    ):
        assert sent_date(extract_meta(bad)) is None
        assert sent_day(extract_meta(bad)) is None


# The pattern collapse_blank_lines replaced (ADR 54): the same text must come out.
_BLANK_RUN = re.compile(r"[ \t\r\f\v]*\n[ \t\r\n\f\v]*")


@settings(max_examples=2000)
@given(st.text(alphabet=" \t\r\n\f\vxy\x00\xa0\u2028\u3000", max_size=40))
def test_collapse_blank_lines_equals_the_pattern(text: str) -> None:
    assert collapse_blank_lines(text) == _BLANK_RUN.sub("\n", text)


def test_collapse_blank_lines_examples() -> None:
    assert collapse_blank_lines("a \t\r\n \n\f b") == "a\nb"
    assert collapse_blank_lines("  a  ") == "  a  "  # no line feed: untouched
    assert collapse_blank_lines("\n\na\n\n") == "\na\n"
    assert collapse_blank_lines("a\xa0\nb") == "a\xa0\nb"  # NBSP is text, not a blank


def test_part_headers_text_keeps_to_its_limit() -> None:
    raw = (
        b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"".join(
            b"--b\r\nContent-Type: text/plain\r\nContent-Description: part %d\r\n\r\nx\r\n" % i
            for i in range(20)
        )
        + b"--b--\r\n"
    )
    meta = extract_meta(raw)
    whole = part_headers_text(raw, meta)
    assert whole.startswith("content-type: text/plain\ncontent-description: part 0\n")
    for limit in (1, 30, 100):
        cut = part_headers_text(raw, meta, limit)
        assert len(cut) <= limit and whole.startswith(cut)
