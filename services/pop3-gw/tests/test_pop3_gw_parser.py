"""The command parser and the RETR/TOP encoder on their own, without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postmesh.pop3_gw import protocol as p
from postmesh.pop3_gw.content import MessageEncoder


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"USER alice@example.test", p.User("alice@example.test")),
        (b"user bob", p.User("bob")),
        (b"PASS pass with  spaces ", p.Pass("pass with  spaces ")),
        (b"AUTH", p.Auth(None, None)),
        (b"utf8", p.Utf8()),
        (b"AUTH plain", p.Auth("PLAIN", None)),
        (b"AUTH PLAIN AGFsaWNlAHB3", p.Auth("PLAIN", "AGFsaWNlAHB3")),
        (b"AUTH PLAIN =", p.Auth("PLAIN", "=")),
        (b"CAPA", p.Capa()),
        (b"stls", p.Stls()),
        (b"STAT", p.Stat()),
        (b"LIST", p.List(None)),
        (b"LIST 3", p.List(3)),
        (b"UIDL", p.Uidl(None)),
        (b"UIDL 12", p.Uidl(12)),
        (b"RETR 1", p.Retr(1)),
        (b"TOP 2 0", p.Top(2, 0)),
        (b"TOP 2 10", p.Top(2, 10)),
        (b"DELE 7", p.Dele(7)),
        (b"NOOP", p.Noop()),
        (b"RSET", p.Rset()),
        (b"QUIT", p.Quit()),
        (b"Quit", p.Quit()),
        (b"LIST  3", p.List(3)),  # lenient about repeated spaces
    ],
)
def test_valid_commands(line: bytes, expected: p.Command) -> None:
    assert p.parse_command(line) == expected


@pytest.mark.parametrize(
    ("line", "text", "keyword"),
    [
        (b"", "Empty command", "unknown"),
        (b"   ", "Empty command", "unknown"),
        (b"FOO bar", "Unknown command: FOO", "unknown"),
        (b"APOP alice 0123456789abcdef", "Unknown command: APOP", "unknown"),
        (b"RETR", "RETR needs an argument", "RETR"),
        (b"RETR abc", "Invalid message number: abc", "RETR"),
        (b"RETR 0", "Invalid message number: 0", "RETR"),
        (b"RETR -1", "Invalid message number: -1", "RETR"),
        (b"RETR 1 2", "Too many arguments", "RETR"),
        (b"DELE 12345678901", "Invalid message number: 12345678901", "DELE"),
        (b"LIST 1 2", "Too many arguments", "LIST"),
        (b"UIDL x", "Invalid message number: x", "UIDL"),
        (b"TOP 1", "Missing arguments", "TOP"),
        (b"TOP 1 -3", "Invalid line count: -3", "TOP"),
        (b"TOP 0 3", "Invalid message number: 0", "TOP"),
        (b"STAT now", "Too many arguments", "STAT"),
        (b"QUIT please", "Too many arguments", "QUIT"),
        (b"USER", "USER needs an argument", "USER"),
        (b"USER a b", "Too many arguments", "USER"),
        (b"PASS", "PASS needs an argument", "PASS"),
        (b"AUTH PLAIN a b", "Too many arguments", "AUTH"),
        (b"RETR \xff", "Command is not valid UTF-8", "unknown"),
        (b"USER a\x00b", "NUL in command", "unknown"),
        (b"RETR \xd9\xa3", "Invalid message number: ?", "RETR"),  # Arabic-Indic digit
    ],
)
def test_invalid_commands(line: bytes, text: str, keyword: str) -> None:
    with pytest.raises(p.ParseError) as exc:
        p.parse_command(line)
    assert exc.value.text == text
    assert exc.value.keyword == keyword


def test_unknown_command_is_echoed_safely() -> None:
    with pytest.raises(p.ParseError) as exc:
        p.parse_command(b"X\x1b[31m" + b"A" * 100)
    assert "\x1b" not in exc.value.text
    assert exc.value.text.endswith("...")
    assert len(exc.value.text) < 60


def test_responses() -> None:
    assert p.ok() == b"+OK\r\n"
    assert p.ok("2 320") == b"+OK 2 320\r\n"
    assert p.err("Authentication failed.", p.AUTH) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert p.err("no") == b"-ERR no\r\n"
    assert p.multiline("list", ["1 10", ".hidden"]) == b"+OK list\r\n1 10\r\n..hidden\r\n.\r\n"


def encode(data: bytes, body_lines: int | None = None, chunk: int | None = None) -> bytes:
    enc = MessageEncoder(body_lines)
    out = b""
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        out += enc.feed(data[i : i + step])
        if enc.done:
            break
    return out + enc.finish()


MESSAGE = (
    b"Subject: dots\r\nFrom: a@b\r\n\r\n.starts with a dot\r\n..two dots\r\nplain\r\n.\r\nlast\r\n"
)
STUFFED = (
    b"Subject: dots\r\nFrom: a@b\r\n\r\n"
    b"..starts with a dot\r\n...two dots\r\nplain\r\n..\r\nlast\r\n.\r\n"
)


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 7, 64])
def test_retr_stuffs_dots_across_any_chunking(chunk: int | None) -> None:
    assert encode(MESSAGE, chunk=chunk) == STUFFED


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_bare_lf_becomes_crlf(chunk: int | None) -> None:
    assert encode(b"A: b\n\n.x\nend\n", chunk=chunk) == b"A: b\r\n\r\n..x\r\nend\r\n.\r\n"


def test_message_without_final_newline_gets_one() -> None:
    assert encode(b"A: b\r\n\r\nno newline") == b"A: b\r\n\r\nno newline\r\n.\r\n"
    assert encode(b"") == b".\r\n"


def test_bare_cr_inside_a_line_is_kept() -> None:
    assert encode(b"A: b\r\n\r\nx\ry\r\n") == b"A: b\r\n\r\nx\ry\r\n.\r\n"


@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_top(chunk: int | None) -> None:
    head = b"Subject: dots\r\nFrom: a@b\r\n\r\n"
    assert encode(MESSAGE, 0, chunk) == head + b".\r\n"
    assert encode(MESSAGE, 1, chunk) == head + b"..starts with a dot\r\n.\r\n"
    assert (
        encode(MESSAGE, 3, chunk) == head + b"..starts with a dot\r\n...two dots\r\nplain\r\n.\r\n"
    )
    assert encode(MESSAGE, 100, chunk) == STUFFED


def test_top_on_a_header_only_message() -> None:
    assert encode(b"A: b\r\nC: d\r\n", 0) == b"A: b\r\nC: d\r\n.\r\n"


def test_top_stops_reading_once_done() -> None:
    enc = MessageEncoder(0)
    assert enc.feed(b"A: b\r\n\r\nbody\r\n") == b"A: b\r\n\r\n"
    assert enc.done
    assert enc.feed(b"more\r\n") == b""
    assert enc.finish() == b".\r\n"


def test_very_long_line_is_streamed_not_held() -> None:
    line = b"." + b"x" * 200_000
    enc = MessageEncoder()
    out = enc.feed(b"A: b\r\n\r\n" + line[:100_000])
    # Most of the line went out before its end arrived, stuffed at the start.
    assert out.startswith(b"A: b\r\n\r\n..xxx")
    assert len(out) > 90_000
    out += enc.feed(line[100_000:] + b"\r")
    out += enc.feed(b"\nnext\r\n") + enc.finish()
    assert out == b"A: b\r\n\r\n." + line + b"\r\nnext\r\n.\r\n"


@given(
    data=st.lists(
        st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x" * 70]), max_size=60
    ),
    chunk=st.integers(min_value=1, max_value=40),
)
def test_retr_fast_path_matches_the_line_by_line_encoder(data: list[bytes], chunk: int) -> None:
    # TOP with a budget beyond the message takes the per-line path; RETR the bulk one.
    message = b"".join(data)
    assert encode(message, chunk=chunk) == encode(message, body_lines=10**6, chunk=chunk)
