"""The parser on its own: bytes in, typed commands out, ParseError for anything malformed."""

from __future__ import annotations

import pytest

from postmesh.imap_gw import message, mutf7, response
from postmesh.imap_gw.parser import NotSupported, ParseError, UnknownCommand, parse_command
from postmesh.imap_gw.parser.commands import (
    Authenticate,
    Examine,
    Fetch,
    ListCmd,
    Login,
    Noop,
    Select,
    Status,
    command_name,
    parse_tag,
)
from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.fetch import MACROS, FetchAtt, FetchKind, Section
from postmesh.imap_gw.parser.sequence import STAR, SequenceError, parse_sequence_set


def seqset(text: str):  # type: ignore[no-untyped-def]
    return parse_sequence_set(Cursor(text.encode()))


def test_simple_command_and_case_insensitive_name() -> None:
    cmd = parse_command(b"a001 noop")
    assert cmd == Noop("a001")


def test_login_quoted_strings_with_escapes() -> None:
    cmd = parse_command(rb'A1 LOGIN "al\"ice" "p\\w d"')
    assert isinstance(cmd, Login)
    assert (cmd.username, cmd.password) == (b'al"ice', b"p\\w d")


def test_login_atoms_and_literals() -> None:
    assert parse_command(b"t LOGIN alice secret") == Login("t", b"alice", b"secret")
    cmd = parse_command(b't LOGIN {5}\r\nal ce {4}\r\n"{}\\')
    assert cmd == Login("t", b"al ce", b'"{}\\')
    # {n+} (LITERAL+) reaches the parser normalised to {n} by the connection.
    assert parse_command(b"t LOGIN {0}\r\n x") == Login("t", b"", b"x")


@pytest.mark.parametrize(
    "raw",
    [
        b't LOGIN "unterminated',
        rb't LOGIN "bad \escape" x',
        b"t LOGIN alice",
        b"t LOGIN  alice secret",  # two spaces
        b"t LOGIN alice secret ",  # trailing space
        b"t LOGIN {10}\r\nshort",  # literal shorter than announced
        b"t LOGIN {5\r\nalice x",
        b't LOGIN "a\r\nb" x',
        b"t LOGIN al(ice x",
    ],
)
def test_malformed_login(raw: bytes) -> None:
    with pytest.raises(ParseError) as exc:
        parse_command(raw)
    assert exc.value.tag == "t"


@pytest.mark.parametrize("raw", [b"", b" NOOP", b"+x NOOP", b"a{ NOOP", b"\x00\xff\r"])
def test_missing_or_invalid_tag(raw: bytes) -> None:
    with pytest.raises(ParseError) as exc:
        parse_command(raw)
    assert exc.value.tag is None


def test_unknown_and_not_yet_supported_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownCommand) as exc:
        parse_command(b"x1 FROBNICATE now")
    assert exc.value.tag == "x1" and "unknown command" in exc.value.message
    with pytest.raises(NotSupported) as ns:
        # A command listed as not yet implemented (the list shrinks as commands are added).
        monkeypatch.setattr("postmesh.imap_gw.parser.commands.NOT_YET", frozenset({"FROB"}))
        parse_command(b"x2 FROB INBOX {3}\r\nabc")
    assert ns.value.code == "CANNOT" and ns.value.tag == "x2"


def test_tag_and_name_sniffing_used_before_literals() -> None:
    assert parse_tag(b"a.1 LOGIN {5}\r\n") == "a.1"
    assert parse_tag(b"+a LOGIN") is None
    assert command_name(b"a uid fetch 1 FLAGS\r\n") == "UID FETCH"
    assert command_name(b"a\r\n") is None


def test_authenticate_with_and_without_initial_response() -> None:
    assert parse_command(b"a AUTHENTICATE plain") == Authenticate("a", "PLAIN", None)
    assert parse_command(b"a AUTHENTICATE PLAIN =") == Authenticate("a", "PLAIN", b"=")
    cmd = parse_command(b"a AUTHENTICATE PLAIN AGFsaWNlAHB3")
    assert isinstance(cmd, Authenticate) and cmd.initial_response == b"AGFsaWNlAHB3"
    with pytest.raises(ParseError):
        parse_command(b"a AUTHENTICATE PLAIN not*base64")


def test_select_examine_status() -> None:
    assert parse_command(b"s SELECT inbox") == Select("s", b"inbox")
    ex = parse_command(b's EXAMINE "Sent Items"')
    assert isinstance(ex, Examine) and ex.readonly and ex.mailbox == b"Sent Items"
    st = parse_command(b"s STATUS INBOX (messages UIDNEXT)")
    assert st == Status("s", b"INBOX", ("MESSAGES", "UIDNEXT"))
    with pytest.raises(ParseError):
        parse_command(b"s STATUS INBOX ()")


def test_list_forms() -> None:
    assert parse_command(b'l LIST "" *') == ListCmd("l", b"", (b"*",))
    assert parse_command(b'l LIST "" ""') == ListCmd("l", b"", (b"",))
    assert parse_command(b"l LIST ~/Mail %/x]") == ListCmd("l", b"~/Mail", (b"%/x]",))
    ext = parse_command(b'l LIST (SUBSCRIBED) "" ("INBOX" Sent*) RETURN (CHILDREN)')
    assert ext == ListCmd("l", b"", (b"INBOX", b"Sent*"), ("SUBSCRIBED",), ("CHILDREN",))
    with pytest.raises(ParseError):
        parse_command(b'l LIST "" * BOGUS (X)')


def test_sequence_sets_parse_and_resolve() -> None:
    s = seqset("1:3,5,7:*")
    assert s.ranges == ((1, 3), (5, 5), (7, STAR))
    assert str(s) == "1:3,5,7:*"
    assert s.resolve_seq(9) == [1, 2, 3, 5, 7, 8, 9]
    assert seqset("4:2").resolve_seq(5) == [2, 3, 4]
    assert seqset("*").resolve_seq(3) == [3]
    with pytest.raises(SequenceError):
        seqset("1:10").resolve_seq(3)
    with pytest.raises(SequenceError):
        seqset("*").resolve_seq(0)


def test_uid_sets_ignore_missing_and_star_is_largest() -> None:
    uids = [2, 5, 9]
    assert seqset("1:4").resolve_uids(uids) == [2]
    assert seqset("3,4,6:8").resolve_uids(uids) == []
    assert seqset("10:*").resolve_uids(uids) == [9]  # RFC 9051 §6.4.9: n:* includes the largest
    assert seqset("1:*").resolve_uids(uids) == uids
    assert seqset("1:*").resolve_uids([]) == []


@pytest.mark.parametrize(
    "bad", ["0", "1:", ":1", "1,,2", "01", "a", "1:x", "$,1", "1:$", "1,$", "$:2", "4294967296"]
)
def test_invalid_sequence_sets(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_command(f"f FETCH {bad} FLAGS".encode())


def test_fetch_attributes() -> None:
    cmd = parse_command(
        b"f FETCH 1:* (FLAGS uid RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (From to)]<0.100>"
        b" BODY[] RFC822 BODY[TEXT]<5.10> BODY[1.MIME])"
    )
    assert isinstance(cmd, Fetch) and not cmd.uid
    atts = cmd.attributes
    assert [a.kind for a in atts[:4]] == [
        FetchKind.FLAGS,
        FetchKind.UID,
        FetchKind.RFC822_SIZE,
        FetchKind.INTERNALDATE,
    ]
    hdr = atts[4]
    assert hdr == FetchAtt(
        FetchKind.BODY_SECTION, Section((), "HEADER.FIELDS", ("From", "to")), (0, 100), peek=True
    )
    assert hdr.response_name() == "BODY[HEADER.FIELDS (From to)]<0>"
    assert not hdr.sets_seen
    assert atts[5].response_name() == "BODY[]" and atts[5].sets_seen
    assert atts[6].kind is FetchKind.RFC822 and atts[6].sets_seen
    assert atts[7].partial == (5, 10) and atts[7].response_name() == "BODY[TEXT]<5>"
    assert atts[8].section == Section((1,), "MIME")


def test_fetch_macros_and_single_attribute() -> None:
    for name in ("ALL", "fast", "FULL"):
        cmd = parse_command(f"f FETCH 1 {name}".encode())
        assert isinstance(cmd, Fetch) and cmd.attributes == MACROS[name.upper()]
    cmd = parse_command(b"f UID FETCH 1:5 BODY.PEEK[]")
    assert isinstance(cmd, Fetch) and cmd.uid and cmd.label == "UID FETCH"
    assert cmd.attributes == (FetchAtt(FetchKind.BODY_SECTION, Section(), None, peek=True),)


@pytest.mark.parametrize(
    "atts",
    [
        "(FLAGS",
        "(ALL)",  # macros only stand alone
        "FOO",
        "BODY[MIME]",  # MIME needs a part number
        "BODY[HEADER.FIELDS]",
        "BODY[1.2",
        "BODY[]<1>",
        "BODY[]<1.0>",
        "(FLAGS) (CHANGEDSINCE)",
        "(FLAGS) (VANISHED)",  # VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)
        "()",
    ],
)
def test_malformed_fetch(atts: str) -> None:
    with pytest.raises(ParseError):
        parse_command(f"f FETCH 1 {atts}".encode())


def test_response_strings() -> None:
    assert response.string("plain") == b'"plain"'
    assert response.string('a"b\\c') == b'"a\\"b\\\\c"'
    assert response.string(b"two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert response.nstring(None) == b"NIL"
    assert response.tagged("a", response.Status.NO, "x\r\ny", "CANNOT") == b"a NO [CANNOT] x  y\r\n"
    assert response.internal_date(0) == b'" 1-Jan-1970 00:00:00 +0000"'


def test_modified_utf7() -> None:
    assert mutf7.encode("Entwürfe") == b"Entw&APw-rfe"
    assert mutf7.encode("A&B") == b"A&-B"
    assert mutf7.decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    for name in ("Entwürfe", "日本語/x&y", "plain"):
        assert mutf7.decode(mutf7.encode(name)) == name
    with pytest.raises(mutf7.MUtf7Error):
        mutf7.decode(b"&Jjo")


def test_message_sections() -> None:
    raw = b"Subject: hi\r\nX-Long: a\r\n b\r\nFrom: x@y\r\n\r\nbody\r\n"
    header, body = message.split(raw)
    assert body == b"body\r\n" and header.endswith(b"\r\n\r\n")
    assert message.header_fields(header, ("x-long",), exclude=False) == b"X-Long: a\r\n b\r\n\r\n"
    assert message.header_fields(header, ("X-LONG",), exclude=True) == (
        b"Subject: hi\r\nFrom: x@y\r\n\r\n"
    )
    assert message.partial(b"0123456789", (8, 5)) == b"89"
    assert message.split(b"no body") == (b"no body", b"")
