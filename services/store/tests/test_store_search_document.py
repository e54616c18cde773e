"""The stored search document: postmesh.store.search encode/decode and build."""

from __future__ import annotations

import json
import zlib

import pytest

from postmesh.store.mime import extract_meta
from postmesh.store.search import (
    SearchDocument,
    build_search_document,
    decode_search_doc,
    encode_search_doc,
)


def test_round_trip_keeps_names_with_dots_order_and_unicode() -> None:
    doc = SearchDocument(
        headers={
            "x-spam.score": ["1.5"],
            "received": ["from a", "from b"],
            "subject": ["Grüße 🎉 \x00 \ud800"],  # a lone surrogate must not break encoding
            "$weird.name[0]": [],
        },
        text="Körper\nzweite Zeile",
    )
    data = encode_search_doc(doc)
    assert isinstance(data, bytes)
    back = decode_search_doc(data)
    assert back == doc
    assert list(back.headers) == list(doc.headers)


def test_version_1_documents_are_still_read() -> None:
    # What encode_search_doc wrote before ADR 0061: the text inside the JSON.
    v1 = {"v": 1, "h": [["subject", ["Grüße"]]], "t": "Körper\nzweite Zeile \ud800"}
    data = zlib.compress(json.dumps(v1, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    doc = decode_search_doc(data)
    assert doc == SearchDocument({"subject": ["Grüße"]}, "Körper\nzweite Zeile \ud800")


def test_part_headers_round_trip_and_older_documents_have_none() -> None:
    doc = SearchDocument({"subject": ["x"]}, "body", part_headers="Content-Type: image/png")
    assert decode_search_doc(encode_search_doc(doc)) == doc
    # A document written before part headers were kept: no "p" in its head.
    old = zlib.compress(b'{"v":2,"h":[["subject",["x"]]]}\nbody')
    assert decode_search_doc(old) == SearchDocument({"subject": ["x"]}, "body")
    with pytest.raises(ValueError):
        decode_search_doc(zlib.compress(b'{"v":2,"h":[],"p":7}\nbody'))


def test_version_2_keeps_the_text_out_of_the_json() -> None:
    text = 'line "one"\nline\\two\n{"v":1}\n'
    data = zlib.decompress(encode_search_doc(SearchDocument({"to": ["a\nb"]}, text)))
    head, _, body = data.partition(b"\n")
    assert json.loads(head) == {"v": 2, "h": [["to", ["a\nb"]]]}
    assert body == text.encode()


def test_build_search_document_from_a_message() -> None:
    raw = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"From: a@example.com\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe\r\n"
    )
    doc = build_search_document(raw, extract_meta(raw))
    assert doc.headers["subject"] == ["Grüße"]
    assert doc.headers["from"] == ["a@example.com"]
    assert doc.text == "Schöne Grüße"
    # The encoded form is compact: a big repetitive text compresses well.
    big = SearchDocument(headers=doc.headers, text="lorem ipsum dolor sit amet " * 40_000)
    assert len(encode_search_doc(big)) < len(big.text) // 20


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not zlib",
        zlib.compress(b"\xff\xfe"),
        zlib.compress(b"[1, 2]"),
        zlib.compress(json.dumps({"v": 2, "h": [], "t": ""}).encode()),
        zlib.compress(b'{"v":1,"h":[],"t":""}\ntext'),
        zlib.compress(b'{"v":3,"h":[]}\ntext'),
        zlib.compress(b"[2]\ntext"),
        zlib.compress(b'{"v":2,"h":[]}\n\xff'),
        zlib.compress(json.dumps({"v": 1, "h": {}, "t": ""}).encode()),
        zlib.compress(json.dumps({"v": 1, "h": [], "t": 5}).encode()),
        zlib.compress(json.dumps({"v": 1, "h": [["a", "b"]], "t": ""}).encode()),
        zlib.compress(json.dumps({"v": 1, "h": [["a", [1]]], "t": ""}).encode()),
        zlib.compress(json.dumps({"v": 1, "h": [[1, ["x"]]], "t": ""}).encode()),
    ],
)
def test_decode_rejects_what_encode_did_not_make(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_search_doc(data)


def test_decode_refuses_a_decompression_bomb() -> None:
    bomb = zlib.compress(b'{"v":1,"h":[],"t":"' + b"a" * (64 * 1024 * 1024) + b'"}', 9)
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="too large"):
        decode_search_doc(bomb)
