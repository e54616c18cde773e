"""BODYSTRUCTURE with offsets (RFC 9051 §7.5.2) from postmesh.store.mime.extract_meta."""

from __future__ import annotations

import random

import pytest

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime import MAX_DEPTH, MAX_PARTS, extract_meta


def params(part: store_pb2.BodyPart) -> list[tuple[str, str]]:
    return [(p.name, p.value) for p in part.params]


def body_of(raw: bytes, part: store_pb2.BodyPart) -> bytes:
    return raw[part.body_offset : part.body_offset + part.size]


def mime_header_of(raw: bytes, part: store_pb2.BodyPart) -> bytes:
    return raw[part.header_offset : part.body_offset]


def all_parts(part: store_pb2.BodyPart) -> list[store_pb2.BodyPart]:
    out = [part]
    for child in part.parts:
        out.extend(all_parts(child))
    if part.HasField("message_body"):
        out.extend(all_parts(part.message_body))
    return out


def check_invariants(raw: bytes, meta: store_pb2.MessageMeta) -> None:
    """Offsets nest and stay inside the message; the meta survives a gRPC round trip."""
    assert meta.header == raw[: meta.body_offset]
    assert meta.body.header_offset == 0 and meta.body.body_offset == meta.body_offset

    def walk(part: store_pb2.BodyPart, lo: int, hi: int, depth: int) -> None:
        assert depth <= MAX_DEPTH + 1
        assert lo <= part.header_offset <= part.body_offset <= part.body_offset + part.size <= hi
        assert part.type and part.subtype and part.encoding
        if part.type == "multipart":
            assert len(part.parts) >= 1
        for child in part.parts:
            walk(child, part.body_offset, part.body_offset + part.size, depth + 1)
        if part.HasField("message_body"):
            mb = part.message_body
            assert mb.header_offset == part.body_offset
            assert mb.body_offset + mb.size == part.body_offset + part.size
            walk(mb, part.body_offset, part.body_offset + part.size, depth + 1)

    walk(meta.body, 0, len(raw), 0)
    wire = store_pb2.GetMessageMetaResponse(messages=[meta]).SerializeToString()
    assert store_pb2.GetMessageMetaResponse.FromString(wire).messages[0] == meta


PLAIN = (
    b"From: Terry Gray <gray@cac.washington.edu>\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"
)


def test_plain_message() -> None:
    meta = extract_meta(PLAIN)
    header_len = PLAIN.index(b"\r\n\r\n") + 4
    assert meta.uid == 0
    assert meta.header == PLAIN[:header_len]
    assert meta.body_offset == header_len
    body = meta.body
    assert (body.type, body.subtype) == ("text", "plain")
    # RFC 2046 §4.1.2 default charset; RFC 2045 §6.1 default encoding.
    assert params(body) == [("charset", "us-ascii")]
    assert body.encoding == "7BIT"
    assert body.size == len(b"line one\r\nline two\r\n")
    assert body.lines == 2
    assert (body.header_offset, body.body_offset) == (0, header_len)
    assert body_of(PLAIN, body) == b"line one\r\nline two\r\n"
    assert not body.id and not body.description and not body.md5 and not body.disposition
    check_invariants(PLAIN, meta)


def _rfc9051_example() -> tuple[bytes, bytes, bytes]:
    # RFC 9051 §7.5.2 BODYSTRUCTURE example:
    # (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)
    #  ("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")
    #   "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")
    text = b"".join(b"%-48d\r\n" % i for i in range(22)) + b"e" * 50 + b"\r\n"
    assert len(text) == 1152 and text.count(b"\n") == 23
    b64 = (b"QUJD" * 15 + b"\r\n") * 72 + b"QUJD" * 22 + b"\r\n"
    assert len(b64) == 4554 and b64.count(b"\n") == 73
    raw = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: MULTIPART/MIXED; BOUNDARY="----=_Part_0"\r\n'
        b"\r\n"
        b"This is a multi-part message in MIME format.\r\n"
        b"------=_Part_0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n" + text + b"\r\n"
        b"------=_Part_0\r\n"
        b'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME="cc.diff"\r\n'
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n"
        b"\r\n" + b64 + b"\r\n"
        b"------=_Part_0--\r\n"
        b"epilogue\r\n"
    )
    return raw, text, b64


def test_rfc9051_bodystructure_example() -> None:
    raw, text, b64 = _rfc9051_example()
    meta = extract_meta(raw)
    body = meta.body
    assert (body.type, body.subtype) == ("multipart", "mixed")
    assert params(body) == [("boundary", "----=_Part_0")]
    assert len(body.parts) == 2
    first, second = body.parts
    assert (first.type, first.subtype) == ("text", "plain")
    assert [(k, v.upper()) for k, v in params(first)] == [("charset", "US-ASCII")]
    assert (first.id, first.description, first.encoding) == ("", "", "7BIT")
    assert (first.size, first.lines) == (1152, 23)
    assert body_of(raw, first) == text
    assert (second.type, second.subtype) == ("text", "plain")
    assert params(second) == [("charset", "US-ASCII"), ("name", "cc.diff")]
    assert second.id == "<960723163407.20117h@cac.washington.edu>"
    assert second.description == "Compiler diff"
    assert second.encoding == "BASE64"
    assert (second.size, second.lines) == (4554, 73)
    assert body_of(raw, second) == b64
    # BODY[2.MIME] is the part's header block, blank line included.
    assert mime_header_of(raw, second).startswith(
        b'Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME="cc.diff"\r\n'
    )
    assert mime_header_of(raw, second).endswith(b"Content-Transfer-Encoding: BASE64\r\n\r\n")
    # The multipart's own body is everything after its header (preamble and epilogue included).
    assert body.size == len(raw) - meta.body_offset
    check_invariants(raw, meta)


def test_rfc9051_section8_single_part_body() -> None:
    # RFC 9051 §8: BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)
    text = b"".join(b"%031d\r\n" % i for i in range(91)) + b"x" * 23 + b"\r\n"
    assert len(text) == 3028 and text.count(b"\n") == 92
    raw = (
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n" + text
    )
    body = extract_meta(raw).body
    assert (body.type, body.subtype, body.encoding) == ("text", "plain", "7BIT")
    assert params(body) == [("charset", "US-ASCII")]
    assert (body.size, body.lines) == (3028, 92)


NESTED = (
    b"From: alice@example.com\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="outer-alt"\r\n'
    b"\r\n"
    b"--outer-alt\r\n"
    b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe aus Z=C3=BCrich\r\n"
    b"--outer-alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Gr\xc3\xbc\xc3\x9fe aus <b>Z\xc3\xbcrich</b></p>\r\n"
    b"--outer-alt--\r\n"
    b"\r\n"
    b"--outer\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Disposition: attachment;\r\n"
    b'\tfilename="report.pdf"; size=12\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Language: de, en-GB\r\n"
    b"Content-Location: http://example.com/\r\n"
    b"  report.pdf\r\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
    b"\r\n"
    b"JVBERi0xLjQKJcOkw7w=\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Description: forwarded\r\n"
    b"\r\n"
    b"From: Carol <carol@example.net>\r\n"
    b"Subject: inner\r\n"
    b"Date: Tue, 4 Mar 2025 08:00:00 +0000\r\n"
    b"Message-ID: <inner@example.net>\r\n"
    b'Content-Type: multipart/mixed; boundary="in"\r\n'
    b"\r\n"
    b"--in\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--in\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--in--\r\n"
    b"--outer--\r\n"
)


def test_nested_multipart_tree_and_offsets() -> None:
    raw = NESTED
    meta = extract_meta(raw)
    root = meta.body
    assert (root.type, root.subtype) == ("multipart", "mixed")
    assert [(p.type, p.subtype) for p in root.parts] == [
        ("multipart", "alternative"),
        ("application", "pdf"),
        ("message", "rfc822"),
    ]
    alt, pdf, msg = root.parts

    # 1: the alternative (its boundary has ours as a prefix and must not split it).
    assert params(alt) == [("boundary", "outer-alt")]
    plain, html = alt.parts
    assert params(plain) == [("charset", "utf-8"), ("format", "flowed")]
    assert plain.encoding == "QUOTED-PRINTABLE"
    assert body_of(raw, plain) == b"Gr=C3=BC=C3=9Fe aus Z=C3=BCrich"
    # Its one line has no line end of its own (the CRLF is the boundary's, RFC 2046 §5.1.1):
    # 0 lines, as UW-IMAP and Dovecot count.
    assert plain.lines == 0
    assert mime_header_of(raw, plain) == (
        b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert body_of(raw, html) == b"<p>Gr\xc3\xbc\xc3\x9fe aus <b>Z\xc3\xbcrich</b></p>"
    assert (html.subtype, html.encoding) == ("html", "7BIT")
    # BODY[1] of a multipart part: everything after its header up to the next delimiter.
    alt_body = body_of(raw, alt)
    assert alt_body.startswith(b"--outer-alt\r\n") and alt_body.endswith(b"--outer-alt--\r\n")

    # 2: the attachment with its extension data.
    assert params(pdf) == [("name", "report.pdf")]
    assert pdf.encoding == "BASE64"
    assert pdf.disposition == "attachment"
    assert [(p.name, p.value) for p in pdf.disposition_params] == [
        ("filename", "report.pdf"),
        ("size", "12"),
    ]
    assert list(pdf.language) == ["de", "en-GB"]
    assert pdf.location == "http://example.com/report.pdf"
    assert pdf.md5 == "Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert body_of(raw, pdf) == b"JVBERi0xLjQKJcOkw7w="
    assert pdf.lines == 0  # only text/* and message/rfc822 have a line count

    # 3: the embedded message: envelope, structure, BODY[3.HEADER] and BODY[3.1].
    assert msg.description == "forwarded"
    inner_raw = body_of(raw, msg)
    # The CRLF before "--outer--" belongs to that delimiter, not to the part.
    assert inner_raw.startswith(b"From: Carol") and inner_raw.endswith(b"--in--")
    assert msg.lines == 14  # line ends: its last line's CRLF is the delimiter's
    env = msg.message_envelope
    assert env.subject == "inner" and env.message_id == "<inner@example.net>"
    assert [(a.name, a.mailbox, a.host) for a in getattr(env, "from")] == [
        ("Carol", "carol", "example.net")
    ]
    inner = msg.message_body
    assert (
        raw[inner.header_offset : inner.body_offset]
        == inner_raw[: inner_raw.index(b"\r\n\r\n") + 4]
    )
    first, png = inner.parts
    assert (first.type, first.subtype) == ("text", "plain")
    assert mime_header_of(raw, first) == b"\r\n"  # a part without fields (RFC 2046 §5.1.1)
    assert body_of(raw, first) == b"inner text"
    assert (png.type, png.subtype, png.encoding) == ("image", "png", "BASE64")
    assert body_of(raw, png) == b"iVBORw0KGgo="
    check_invariants(raw, meta)


def test_bare_lf_line_endings() -> None:
    raw = NESTED.replace(b"\r\n", b"\n")
    meta = extract_meta(raw)
    assert meta.header.endswith(b'boundary="outer"\n\n')
    alt, pdf, msg = meta.body.parts
    assert body_of(raw, alt.parts[0]) == b"Gr=C3=BC=C3=9Fe aus Z=C3=BCrich"
    assert body_of(raw, pdf) == b"JVBERi0xLjQKJcOkw7w="
    assert body_of(raw, msg.message_body.parts[0]) == b"inner text"
    assert msg.message_envelope.subject == "inner"
    assert pdf.location == "http://example.com/report.pdf"
    check_invariants(raw, meta)


def test_missing_boundary_parameter_reads_as_text() -> None:
    raw = b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\n--foo\r\nhello\r\n--foo--\r\n"
    body = extract_meta(raw).body
    assert (body.type, body.subtype) == ("text", "plain")
    assert params(body) == [("charset", "us-ascii")]
    assert body.size == len(raw) - raw.index(b"--foo")
    assert body.lines == 3
    assert not body.parts


def test_boundary_never_found_reads_as_text() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="nope"\r\n\r\njust text\r\n'
    meta = extract_meta(raw)
    assert (meta.body.type, meta.body.subtype) == ("text", "plain")
    assert body_of(raw, meta.body) == b"just text\r\n"
    check_invariants(raw, meta)


def test_truncated_multipart_last_part_runs_to_end() -> None:
    cut = NESTED.index(b"JVBERi0xLj") + 6
    raw = NESTED[:cut]
    meta = extract_meta(raw)
    alt, pdf = meta.body.parts
    assert len(alt.parts) == 2
    assert body_of(raw, pdf) == b"JVBERi"
    assert pdf.body_offset + pdf.size == len(raw)
    check_invariants(raw, meta)


def test_every_truncation_and_bare_lf_variant_is_consistent() -> None:
    # Cutting the message at every offset exercises half headers, half boundaries and half
    # CRLFs; none may raise or produce offsets outside the message.
    for raw in (NESTED, NESTED.replace(b"\r\n", b"\n")):
        for cut in range(len(raw) + 1):
            check_invariants(raw[:cut], extract_meta(raw[:cut]))


def test_random_garbage_never_raises() -> None:
    rng = random.Random(20260301)
    pieces = [
        b"\r\n",
        b"\n",
        b"--outer",
        b"--in",
        b"--",
        b"Content-Type: multipart/mixed; boundary=outer\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: multipart/digest; boundary=in\r\n",
        b"From: =?utf-8?b?w6k=?= <a@b>\r\n",
        b"To: g: a@b, (c) <d@e>;\r\n",
        b" folded\r\n",
        b"\xff\xfe\x00",
        b"=?x?q?=FF?=",
        b'"unterminated',
        b"(unclosed",
        b"<",
        b"@",
        b":",
        b";",
    ]
    for _ in range(3000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        check_invariants(raw, extract_meta(raw))
    for _ in range(300):
        raw = rng.randbytes(rng.randrange(0, 2000))
        check_invariants(raw, extract_meta(raw))


def test_empty_message() -> None:
    meta = extract_meta(b"")
    assert meta.header == b"" and meta.body_offset == 0
    assert (meta.body.type, meta.body.subtype, meta.body.size, meta.body.lines) == (
        "text",
        "plain",
        0,
        0,
    )
    env = meta.envelope
    assert not (env.has_date or env.has_subject or env.has_message_id or env.has_in_reply_to)
    assert not getattr(env, "from") and not env.sender and not env.reply_to and not env.to


def test_header_without_body_or_separator() -> None:
    raw = b"Subject: only a header\r\nFrom: a@example.com"
    meta = extract_meta(raw)
    assert meta.header == raw and meta.body_offset == len(raw)
    assert meta.body.size == 0 and meta.body.lines == 0
    assert meta.envelope.subject == "only a header"


def test_no_header_at_all() -> None:
    raw = b"Just some text without any header\r\nsecond line\r\n"
    meta = extract_meta(raw)
    assert meta.header == b"" and meta.body_offset == 0
    assert body_of(raw, meta.body) == raw and meta.body.lines == 2


def test_non_header_line_ends_header_without_separator() -> None:
    raw = b"Subject: hi\r\nthis is body text\r\nmore\r\n"
    meta = extract_meta(raw)
    assert meta.header == b"Subject: hi\r\n"
    assert body_of(raw, meta.body) == b"this is body text\r\nmore\r\n"
    assert meta.envelope.subject == "hi"


def test_part_bomb_is_capped() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(5000))
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    meta = extract_meta(raw)
    everything = all_parts(meta.body)
    assert len(everything) == MAX_PARTS
    children = meta.body.parts
    assert len(children) == MAX_PARTS - 1
    assert body_of(raw, children[0]) == b"part 0"
    # The rest of the multipart is one opaque part up to the close delimiter.
    last = children[-1]
    assert (last.type, last.subtype) == ("application", "octet-stream")
    assert last.body_offset + last.size == raw.rindex(b"\r\n--b--")
    assert body_of(raw, last).startswith(
        b"Content-Type: text/plain\r\n\r\npart %d" % (MAX_PARTS - 2)
    )
    check_invariants(raw, meta)


def test_deep_multipart_nesting_is_capped() -> None:
    depth = 300
    head = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1)
        for i in range(depth)
    )
    tail = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth + 1)))
    raw = (
        b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        + head
        + b"--b300\r\n\r\nleaf\r\n"
        + tail
    )
    meta = extract_meta(raw)
    part = meta.body
    levels = 0
    while part.parts:
        part = part.parts[0]
        levels += 1
    assert levels == MAX_DEPTH
    assert (part.type, part.subtype) == ("application", "octet-stream")
    check_invariants(raw, meta)


def test_deep_message_rfc822_nesting_is_capped() -> None:
    raw = b"Subject: leaf\r\n\r\nbody\r\n"
    for i in range(200):
        raw = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % i + raw
    meta = extract_meta(raw)
    part = meta.body
    levels = 0
    while part.HasField("message_body"):
        part = part.message_body
        levels += 1
    assert levels == MAX_DEPTH
    check_invariants(raw, meta)


def test_huge_header_line() -> None:
    raw = (
        b"Subject: " + b"x" * (4 * 1024 * 1024) + b"\r\nTo: " + b"a@b, " * 200_000 + b"\r\n\r\nbody"
    )
    meta = extract_meta(raw)
    assert len(meta.envelope.subject) == 4 * 1024 * 1024
    assert len(meta.envelope.to) > 1000
    assert body_of(raw, meta.body) == b"body"


def test_boundary_prefix_and_transport_padding() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n'
        b"--abc  \r\n"  # transport padding after the boundary (RFC 2046 §5.1.1)
        b'Content-Type: multipart/alternative; boundary="abcdef"\r\n\r\n'
        b"--abcdef\r\n\r\none\r\n--abcdef\r\n\r\ntwo\r\n--abcdef--\r\n"
        b"--abc\r\n\r\nthree\r\n"
        b"--abc-- \r\n"
    )
    meta = extract_meta(raw)
    alt, three = meta.body.parts
    assert [body_of(raw, p) for p in alt.parts] == [b"one", b"two"]
    assert body_of(raw, three) == b"three"
    check_invariants(raw, meta)


def test_empty_parts_and_only_close_delimiter() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n'
    meta = extract_meta(raw)
    empty, x = meta.body.parts
    assert empty.size == 0 and empty.header_offset == empty.body_offset
    assert body_of(raw, x) == b"x"
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b--\r\n'
    meta = extract_meta(raw)
    assert len(meta.body.parts) == 1 and meta.body.parts[0].size == 0
    check_invariants(raw, meta)


def test_digest_default_type_and_encoded_message() -> None:
    raw = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n'
        b"--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n"
        b"--d\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"U3ViamVjdDogdHdvDQoNCnNlY29uZA==\r\n"
        b"--d--\r\n"
    )
    meta = extract_meta(raw)
    one, two = meta.body.parts
    # RFC 2046 §5.1.5: the default type in a digest is message/rfc822.
    assert (one.type, one.subtype) == ("message", "rfc822")
    assert one.message_envelope.subject == "one"
    assert body_of(raw, one.message_body) == b"first"
    # An encoded message/rfc822 cannot be parsed in place: opaque.
    assert (two.type, two.subtype, two.encoding) == ("application", "octet-stream", "BASE64")
    assert not two.HasField("message_body")
    check_invariants(raw, meta)


def test_invalid_content_type_falls_back_to_default() -> None:
    raw = b'Content-Type: garbage; charset=utf-8\r\nContent-Transfer-Encoding: "Base64"\r\n\r\nx'
    body = extract_meta(raw).body
    assert (body.type, body.subtype) == ("text", "plain")
    assert params(body) == [("charset", "us-ascii")]
    assert body.encoding == "BASE64"


def test_rfc2231_parameters_are_joined() -> None:
    raw = (
        b"Content-Type: application/octet-stream;\r\n"
        b"  name*0*=utf-8''%E2%82%AC%20rates;\r\n"
        b'  name*1=".txt";\r\n'
        b'  title*0="a long ";  title*1="title"; (a comment) x-mode = "a;b"\r\n'
        b"Content-Disposition: ATTACHMENT; filename*=iso-8859-1'en'%A3%20rates.txt\r\n"
        b"\r\nbody"
    )
    body = extract_meta(raw).body
    assert params(body) == [
        ("name*", "utf-8''%E2%82%AC%20rates.txt"),
        ("title", "a long title"),
        ("x-mode", "a;b"),
    ]
    assert body.disposition == "attachment"
    assert [(p.name, p.value) for p in body.disposition_params] == [
        ("filename*", "iso-8859-1'en'%A3%20rates.txt")
    ]


def test_many_tiny_header_fields() -> None:
    raw = b"X-A: 1\r\n" * 200_000 + b"\r\nbody"
    meta = extract_meta(raw)
    assert meta.body_offset == len(raw) - 4 and body_of(raw, meta.body) == b"body"
    check_invariants(raw, meta)


def test_boundary_candidate_flood_is_bounded() -> None:
    flood = b"--bx\r\n" * 300_000
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + flood
        + b"--b\r\n\r\nx\r\n--b--\r\n"
    )
    meta = extract_meta(raw)
    # Past the work cap the rest of the body is not searched for delimiters.
    assert (meta.body.type, meta.body.subtype) == ("text", "plain")
    check_invariants(raw, meta)
    # Below the cap the same shape parses normally.
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + flood[:60_000]
        + b"--b\r\n\r\nx\r\n--b--\r\n"
    )
    meta = extract_meta(raw)
    assert [body_of(raw, p) for p in meta.body.parts] == [b"x"]


def test_internal_failure_still_yields_a_meta(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from postmesh.store.mime import structure

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(structure._Parser, "entity", boom)
    meta = extract_meta(PLAIN)
    assert meta.header == PLAIN[: PLAIN.index(b"\r\n\r\n") + 4]
    assert (meta.body.type, meta.body.subtype, meta.body.lines) == ("text", "plain", 2)
    assert body_of(PLAIN, meta.body) == b"line one\r\nline two\r\n"
    assert "structure extraction failed" in caplog.text


def test_content_type_with_spaces_around_the_slash() -> None:
    body = extract_meta(b"Content-Type: Text / HTML ; charset=utf-8\r\n\r\n<p>x</p>").body
    assert (body.type, body.subtype) == ("text", "html")
    assert params(body) == [("charset", "utf-8")]
