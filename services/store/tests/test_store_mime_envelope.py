"""ENVELOPE (RFC 9051 §7.5.2), address parsing and RFC 2047 decoding in postmesh.store.mime."""

from __future__ import annotations

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime import decode_words, extract_meta, parse_addresses
from postmesh.store.mime.addresses import MISSING_HOST, Address


def addrs(items: object) -> list[tuple[str, str, str, str]]:
    return [(a.name, a.adl, a.mailbox, a.host) for a in items]  # type: ignore[attr-defined]


def envelope(raw: bytes) -> store_pb2.Envelope:
    return extract_meta(raw).envelope


def test_rfc9051_envelope_example() -> None:
    # RFC 9051 §8 (also §7.5.2): the sample message and the ENVELOPE a server returns for it.
    raw = (
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: IMAP4rev2 WG mtg summary and minutes\r\n"
        b"To: imap@cac.washington.edu\r\n"
        b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
        b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n"
        b"body\r\n"
    )
    env = envelope(raw)
    assert env.date == "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"
    assert env.subject == "IMAP4rev2 WG mtg summary and minutes"
    terry = [("Terry Gray", "", "gray", "cac.washington.edu")]
    assert addrs(getattr(env, "from")) == terry
    # No Sender / Reply-To: the server fills in From (RFC 9051 §7.5.2).
    assert addrs(env.sender) == terry
    assert addrs(env.reply_to) == terry
    assert addrs(env.to) == [("", "", "imap", "cac.washington.edu")]
    assert addrs(env.cc) == [
        ("", "", "minutes", "CNRI.Reston.VA.US"),
        ("John Klensin", "", "KLENSIN", "MIT.EDU"),
    ]
    assert addrs(env.bcc) == []
    assert (env.in_reply_to, env.has_in_reply_to) == ("", False)
    assert env.message_id == "<B27397-0100000@cac.washington.edu>"
    assert env.has_date and env.has_subject and env.has_message_id


def test_folded_and_empty_fields_and_presence() -> None:
    raw = (
        b"Subject: a folded\r\n"
        b"\tsubject line  \r\n"
        b"In-Reply-To:\r\n"
        b"Sender:\r\n"
        b"Reply-To: replies@example.com\r\n"
        b"From: a@example.com\r\n"
        b"Subject: the second Subject is ignored\r\n"
        b"\r\n"
    )
    env = envelope(raw)
    # RFC 5322 §2.2.3 unfolding keeps the WSP, drops the CRLF.
    assert env.subject == "a folded\tsubject line"
    assert env.has_in_reply_to and env.in_reply_to == ""  # "" not NIL
    assert not env.has_date and not env.has_message_id
    assert addrs(env.sender) == [("", "", "a", "example.com")]  # empty Sender → From
    assert addrs(env.reply_to) == [("", "", "replies", "example.com")]


def test_rfc2047_names_and_subject_kept_raw() -> None:
    raw = (
        b"From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>\r\n"
        b"To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>,\r\n"
        b'  "=?utf-8?b?SsO2cmc=?= M." <joerg@example.de>\r\n'
        b"Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
        b"    =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\r\n"
        b"\r\n"
    )
    env = envelope(raw)
    assert addrs(getattr(env, "from")) == [("Keld Jørn Simonsen", "", "keld", "dkuug.dk")]
    assert addrs(env.to) == [
        ("Keith Moore", "", "moore", "cs.utk.edu"),
        ("Jörg M.", "", "joerg", "example.de"),
    ]
    # ENVELOPE's subject is the raw (unfolded) value: clients decode it.
    assert env.subject == (
        "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=    "
        "=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
    )


def test_decode_words_rfc2047_section8_examples() -> None:
    assert decode_words("(=?ISO-8859-1?Q?a?=)") == "(a)"
    assert decode_words("(=?ISO-8859-1?Q?a?= b)") == "(a b)"
    assert decode_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)") == "(ab)"
    assert decode_words("(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)") == "(ab)"
    assert decode_words("(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)") == "(ab)"
    assert decode_words("(=?ISO-8859-1?Q?a_b?=)") == "(a b)"
    assert decode_words("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)") == "(a b)"
    assert (
        decode_words(
            "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= "
            "=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="
        )
        == "If you can read this you understand the example."
    )
    # RFC 2231 §5 language suffix.
    assert decode_words("=?US-ASCII*EN?Q?Keith_Moore?=") == "Keith Moore"


def test_decode_words_split_multibyte_unknown_charset_and_garbage() -> None:
    # A multi-byte character split across two encoded-words of one charset.
    assert decode_words("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=") == "café"
    assert decode_words("=?x-unknown-charset?q?caf=C3=A9?=") == "café"
    assert decode_words("=?base64?q?caf=C3=A9?=") == "café"  # a bytes codec is no charset
    assert decode_words("=?utf-8?b?!!!?=") == ""
    assert decode_words("=?utf-8?q?a=0D=0Ab=00c?=") == "a  b c"  # no controls in names
    assert decode_words("plain =?utf-8?x?abc?= text") == "plain =?utf-8?x?abc?= text"
    assert decode_words("=?gb2312?b?1tDOxA==?=") == "中文"


def test_group_syntax_rfc5322_appendix_a() -> None:
    # RFC 5322 A.1.3, with the group markers IMAP uses (RFC 9051 §7.5.2).
    value = "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;"
    assert addrs(parse_addresses(value)) == [
        ("", "", "A Group", ""),
        ("Ed Jones", "", "c", "a.test"),
        ("", "", "joe", "where.test"),
        ("John", "", "jdoe", "one.test"),
        ("", "", "", ""),
    ]
    assert addrs(parse_addresses("Undisclosed recipients:;")) == [
        ("", "", "Undisclosed recipients", ""),
        ("", "", "", ""),
    ]
    raw = b"To: a@b.example, Friends: x@y.example;, c@d.example\r\nCc: undisclosed-recipients:;\r\n\r\n"
    env = envelope(raw)
    assert addrs(env.to) == [
        ("", "", "a", "b.example"),
        ("", "", "Friends", ""),
        ("", "", "x", "y.example"),
        ("", "", "", ""),
        ("", "", "c", "d.example"),
    ]
    assert addrs(env.cc) == [("", "", "undisclosed-recipients", ""), ("", "", "", "")]


def test_comments_quotes_routes_and_odd_addresses() -> None:
    # RFC 5322 A.5: comments everywhere.
    assert addrs(
        parse_addresses("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>")
    ) == [("Pete", "", "pete", "silly.test")]
    assert addrs(
        parse_addresses(
            "A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
            "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend); (the end of the group)"
        )
    ) == [
        ("", "", "A Group", ""),
        ("Chris Jones", "", "c", "public.example"),
        ("", "", "joe", "example.org"),
        ("John", "", "jdoe", "one.test"),
        ("", "", "", ""),
    ]
    # A bare addr-spec's trailing comment is its name (as c-client and Dovecot do).
    assert addrs(parse_addresses("joe@example.com (Joe Q. Public)")) == [
        ("Joe Q. Public", "", "joe", "example.com")
    ]
    assert addrs(parse_addresses('"Joe Q. Public" <john.q.public@example.com>')) == [
        ("Joe Q. Public", "", "john.q.public", "example.com")
    ]
    assert addrs(
        parse_addresses('"Smith, John \\"JJ\\"" <js@example.com>, Mary Smith <mary@x.test>')
    ) == [
        ('Smith, John "JJ"', "", "js", "example.com"),
        ("Mary Smith", "", "mary", "x.test"),
    ]
    # RFC 5322 §4.4 obsolete source route → adl.
    assert addrs(parse_addresses("<@relay1.test,@relay2.test:joe@c.test>")) == [
        ("", "@relay1.test,@relay2.test", "joe", "c.test")
    ]
    assert addrs(parse_addresses('"john doe"@example.com')) == [("", "", "john doe", "example.com")]
    assert addrs(parse_addresses("[127.0.0.1]")) == [("", "", "[127.0.0.1]", MISSING_HOST)]
    assert addrs(parse_addresses("user@[192.0.2.1]")) == [("", "", "user", "[192.0.2.1]")]
    # No domain: never an empty host, which would read as a group start.
    assert addrs(parse_addresses("postmaster")) == [("", "", "postmaster", MISSING_HOST)]
    assert addrs(parse_addresses("<>, ,, Name <>")) == [("Name", "", "", MISSING_HOST)]
    assert addrs(parse_addresses("")) == []


def test_malformed_address_lists_never_raise() -> None:
    for value in (
        '"unterminated <a@b>',
        "(unterminated comment a@b",
        "<a@b",
        "a@b>",
        ";;;:::,,,<<<>>>@@@",
        "group: a@b, nested: c@d; e@f",
        "\\\\\\",
        "=?utf-8?q?=FF=FE?= <a@b>",
        "a" * 100_000 + "@b",
    ):
        result = parse_addresses(value)
        assert all(isinstance(a, Address) for a in result)
    assert addrs(parse_addresses("a@b>")) == [("", "", "a", "b")]
    assert addrs(parse_addresses('"unterminated <a@b>')) == [
        ("", "", "unterminated <a@b>", MISSING_HOST)
    ]


def test_utf8_headers_rfc6532_and_invalid_bytes() -> None:
    raw = (
        "From: Jöran Øster <jöran@bücher.example>\r\n"
        "Subject: Grüße aus Zürich\r\n"
        "To: 山田 <yamada@例え.jp>\r\n"
        "\r\n"
    ).encode()
    env = envelope(raw)
    assert addrs(getattr(env, "from")) == [("Jöran Øster", "", "jöran", "bücher.example")]
    assert env.subject == "Grüße aus Zürich"
    assert addrs(env.to) == [("山田", "", "yamada", "例え.jp")]
    env = envelope(b"Subject: caf\xe9 \xff\xfe\r\nFrom: \xc3(bad) <a@b>\r\n\r\n")
    assert env.subject == "caf\ufffd \ufffd\ufffd"
    assert addrs(getattr(env, "from"))[0][2:] == ("a", "b")
    # The result must serialise: protobuf strings have to be valid UTF-8.
    assert store_pb2.Envelope.FromString(env.SerializeToString()) == env


def test_embedded_message_envelope_defaults() -> None:
    raw = (
        b"Content-Type: message/rfc822\r\n\r\n"
        b"From: Carol <carol@example.net>\r\n"
        b"Reply-To: list@example.net\r\n"
        b"In-Reply-To: <parent@example.net>\r\n"
        b"\r\ninner\r\n"
    )
    meta = extract_meta(raw)
    env = meta.body.message_envelope
    assert addrs(env.sender) == [("Carol", "", "carol", "example.net")]
    assert addrs(env.reply_to) == [("", "", "list", "example.net")]
    assert env.in_reply_to == "<parent@example.net>" and env.has_in_reply_to
    assert not env.has_subject
    assert not meta.envelope.has_subject and not getattr(meta.envelope, "from")
