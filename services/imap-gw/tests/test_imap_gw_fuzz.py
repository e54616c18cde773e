"""Property-based fuzzing (hypothesis) of the IMAP parser and of a live session.

The parser must turn any input into a typed command or a ParseError (BAD; its subclasses
NotSupported and UnknownCommand are NO [CANNOT] and BAD): never another exception, never a
hang. A session must survive any line a client sends. Examples are bounded so the module runs
in a few seconds in ``make test``.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imap_wire import Client

from postmesh.imap_gw.commands.search import resolve
from postmesh.imap_gw.parser import Command, ParseError, parse_command
from postmesh.imap_gw.parser.commands import COMMANDS, NOT_YET, UID_COMMANDS
from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.search import Search, parse_search
from postmesh.imap_gw.saved_search import SavedSearch
from postmesh.imap_gw.search_proto import to_proto
from postmesh.imap_gw.state import SelectedMailbox
from postmesh.store import indexing
from postmesh.store import search as store_search

if TYPE_CHECKING:
    import pytest
    from store_env import StoreEnv as Env

FAST = settings(max_examples=200, deadline=None)


def parses_or_refuses(data: bytes) -> Command | None:
    """The property: a Command, or None for a ParseError (any other exception fails)."""
    try:
        cmd = parse_command(data)
    except ParseError as e:
        assert isinstance(e.message, str) and e.message
        return None
    assert isinstance(cmd, Command)
    return cmd


# -- random bytes ------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    parses_or_refuses(data)


@FAST
@given(st.sampled_from(sorted(COMMANDS)), st.binary(max_size=200))
def test_known_command_random_arguments(name: str, args: bytes) -> None:
    parses_or_refuses(b"t " + name.encode() + b" " + args)
    parses_or_refuses(b"t UID " + name.encode() + b" " + args)


# -- grammar-shaped commands -------------------------------------------------------------------

_atom = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='(){ %*"\\]'),
    min_size=1,
    max_size=12,
)
_small = st.integers(1, 40).map(str)
_number = st.one_of(
    _small,
    st.integers(0, 2**64).map(str),
    st.just("*"),
    st.just("$"),
)
# Mostly valid sets (small numbers, ranges in either order), sometimes not.
_seq_set = st.one_of(
    st.lists(
        st.one_of(_small, st.tuples(_small, st.one_of(_small, st.just("*"))).map(":".join)),
        min_size=1,
        max_size=4,
    ).map(",".join),
    st.lists(
        st.one_of(_number, st.tuples(_number, _number).map(":".join)), min_size=1, max_size=4
    ).map(",".join),
)


def _quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_quoted_str = st.text(max_size=12).map(_quoted)
_bad_quoted = st.text(max_size=12).map(lambda s: '"' + s)  # unterminated, raw escapes
_date = st.one_of(
    st.dates().map(lambda d: d.strftime("%d-%b-%Y")),
    st.dates().map(lambda d: '"' + d.strftime("%-d-%b-%Y") + '"'),
    st.from_regex(r"[0-9]{1,3}-[A-Za-z]{2,4}-[0-9]{1,5}", fullmatch=True),
)
_flag = st.one_of(
    st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"]),
    _atom,
    _atom.map(lambda a: "\\" + a),
)
_token = st.one_of(
    _atom,
    _number,
    _seq_set,
    _quoted_str,
    _bad_quoted,
    _date,
    _flag,
    st.sampled_from(["(", ")", "()", "[", "]", "<0.10>", "{", "}", "NIL", "", " "]),
)


@st.composite
def _literal(draw: st.DrawFn) -> bytes:
    """A literal, sometimes with a wrong announced length."""
    data = draw(st.binary(max_size=20))
    size = draw(st.one_of(st.just(len(data)), st.integers(0, 40)))
    plus = draw(st.sampled_from([b"", b"+"]))
    return b"{%d%s}\r\n" % (size, plus) + data


_arg = st.one_of(_token.map(str.encode), _literal())


@st.composite
def _command(draw: st.DrawFn) -> bytes:
    tag = draw(st.one_of(_atom, st.just("a"), st.just("+x"), st.just("")))
    names = sorted(COMMANDS) + [f"UID {n}" for n in sorted(UID_COMMANDS)] + sorted(NOT_YET)
    name = draw(st.one_of(st.sampled_from(names), _atom))
    args = draw(st.lists(_arg, max_size=8))
    sep = draw(st.sampled_from([b" ", b"", b"  "]))
    return tag.encode() + b" " + name.encode() + b"".join(sep + a for a in args)


@FAST
@given(_command())
def test_grammar_shaped_commands(data: bytes) -> None:
    parses_or_refuses(data)


# -- SEARCH: random key trees ------------------------------------------------------------------

_simple_key = st.one_of(
    st.sampled_from(
        [
            "ALL",
            "ANSWERED",
            "DELETED",
            "DRAFT",
            "FLAGGED",
            "SEEN",
            "UNANSWERED",
            "UNDELETED",
            "UNDRAFT",
            "UNFLAGGED",
            "UNSEEN",
            "NEW",
            "OLD",
            "RECENT",
            "UNRECENT",
        ]
    ),
    st.tuples(st.sampled_from(["KEYWORD", "UNKEYWORD"]), _atom).map(" ".join),
    st.tuples(
        st.sampled_from(["FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT"]),
        st.one_of(_atom, _quoted_str),
    ).map(" ".join),
    st.tuples(st.just("HEADER"), st.one_of(_atom, _quoted_str), _quoted_str).map(" ".join),
    st.tuples(
        st.sampled_from(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]), _date
    ).map(" ".join),
    st.tuples(st.sampled_from(["LARGER", "SMALLER", "MODSEQ"]), _number).map(" ".join),
    st.tuples(st.just("UID"), _seq_set).map(" ".join),
    _seq_set,
)
# Now and then an unknown key or stray token, so refusals are exercised too.
_simple_key = st.one_of(_simple_key, _simple_key, _simple_key, _atom)
_search_key = st.recursive(
    _simple_key,
    lambda inner: st.one_of(
        inner.map(lambda k: "NOT " + k),
        st.tuples(inner, inner).map(lambda kk: f"OR {kk[0]} {kk[1]}"),
        st.lists(inner, min_size=1, max_size=4).map(lambda ks: "(" + " ".join(ks) + ")"),
    ),
    max_leaves=12,
)
_search_args = st.tuples(
    st.sampled_from(
        ["", "RETURN () ", "RETURN (MIN MAX) ", "RETURN (ALL COUNT SAVE) ", "RETURN (FOO) "]
    ),
    st.sampled_from(["", "CHARSET UTF-8 ", "CHARSET US-ASCII ", "CHARSET X-BOGUS "]),
    st.lists(_search_key, min_size=0, max_size=3).map(" ".join),
).map(lambda parts: "".join(parts).rstrip(" "))


def _selected() -> SelectedMailbox:
    sel = SelectedMailbox("INBOX", 1, readonly=False, uidnext=40)
    sel.uids.extend([1, 2, 5, 7, 30])
    return sel


def _check_search(args: str, uid: bool) -> None:
    """Whatever SEARCH parses is resolvable against a mailbox, converts to the store's SearchKey
    and passes the store's validation (else the client would get BAD for valid input, or a
    server error)."""
    data = ("t UID SEARCH " if uid else "t SEARCH ").encode() + args.encode()
    cmd = parses_or_refuses(data)
    if cmd is None:
        return
    assert isinstance(cmd, Search) and cmd.uid is uid
    sel = _selected()
    session = SimpleNamespace(saved_search=SavedSearch())
    session.saved_search.save(sel, [2, 7])
    resolved = resolve(cmd.criteria, session, sel)  # type: ignore[arg-type]
    key = to_proto(resolved)
    indexing.validate(key)  # what the store servicer checks (else INVALID_ARGUMENT)
    msgs = [store_search.SearchableMessage(u, (), 0, 10, 1) for u in sel.uids]
    store_search.search(key, msgs, store_search.SearchContext(max_uid=30))


@settings(max_examples=200, deadline=None)
@given(_search_args, st.booleans())
def test_search_criteria_parse_resolve_and_reach_the_store_intact(args: str, uid: bool) -> None:
    _check_search(args, uid)


@FAST
@given(_seq_set, st.sampled_from(["UID ", "NOT UID ", "", "NOT "]))
def test_sequence_sets_in_search_reach_the_store_intact(seq: str, key: str) -> None:
    """Sequence sets are where IMAP and the store differ most ("4:2", "*", "n:*" above the
    highest UID, "$"): every set SEARCH accepts must be one the store accepts."""
    _check_search(key + seq, False)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    for depth in (60, 1000, 100_000):
        for text in ("(" * depth + "SEEN" + ")" * depth, "NOT " * depth + "SEEN"):
            try:
                parse_search(Cursor(b" " + text.encode()))
            except ParseError as e:
                assert re.search("deeper|more than", e.message), e.message
            else:
                raise AssertionError(f"depth {depth} accepted")


# -- a live session ----------------------------------------------------------------------------

_SAFE_NAMES = sorted(
    (set(COMMANDS) | {f"UID {n}" for n in UID_COMMANDS} | NOT_YET)
    # These legitimately end the session, change the transport or wait for more input.
    - {"LOGOUT", "STARTTLS", "AUTHENTICATE", "IDLE"}
)
_line_bytes = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_wire_line = st.one_of(
    _line_bytes,
    st.tuples(
        st.sampled_from(["w", "w1", "+", "*"]),
        st.sampled_from(_SAFE_NAMES),
        st.lists(_token, max_size=6).map(" ".join),
    ).map(lambda t: f"{t[0]} {t[1]} {t[2]}".encode()),
)
# Literals on the wire must announce their true length (a wrong one makes the server wait for
# data, or read the next command as data: the client's bug, not a session failure).
_good_literal = st.binary(max_size=20).map(lambda d: b"{%d+}\r\n" % len(d) + d)
_wire_line = st.one_of(
    _wire_line,
    st.tuples(
        st.sampled_from(_SAFE_NAMES),
        st.lists(st.one_of(_token.map(str.encode), _good_literal), max_size=5),
    ).map(lambda t: b"w2 " + t[0].encode() + b"".join(b" " + a for a in t[1])),
)
_LITERAL_AT_END = re.compile(rb"\{\d+\+?\}\Z")


def _safe(line: bytes) -> bytes:
    """No literal announced at the end (the next line would become its data) and no command
    that waits for more input (AUTHENTICATE, IDLE) or ends the session."""
    if _LITERAL_AT_END.search(line):
        line += b" x"
    words = line.split(b" ")
    upper = [w.upper() for w in words[1:3]]
    if any(w in (b"LOGOUT", b"STARTTLS", b"AUTHENTICATE", b"IDLE") for w in upper):
        return b"w NOOP"
    return line


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(_wire_line, min_size=1, max_size=6))
async def test_random_lines_never_kill_the_session(
    env: Env, caplog: pytest.LogCaptureFixture, lines: list[bytes]
) -> None:
    c = await Client.selected(env)
    try:
        for line in lines:
            await c.send(_safe(line))
            # A NOOP after each line: the session answers it, so it is alive and in step.
            reply = await c.cmd(b"zz NOOP")
            assert reply[-1].startswith(b"zz OK"), (line, reply)
    finally:
        await c.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


_blob_piece = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"\r\n", b"\n", b"\r", b" ", b"{5}\r\n", b"{3+}\r\n", b"{0}\r\n", b"DONE\r\n"]
    ),
    st.integers(0, 2**70).map(lambda n: b"{%d}\r\n" % n),
    _command(),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(_blob_piece, min_size=1, max_size=8), st.booleans())
async def test_random_streams_never_break_the_server(
    env: Env, caplog: pytest.LogCaptureFixture, pieces: list[bytes], log_in: bool
) -> None:
    """Any byte stream, before or after login, then a hang-up: the server logs no error and
    serves the next connection (a session may end itself, e.g. on an oversized LITERAL+)."""
    c = await (Client.selected(env) if log_in else Client.connect(env))
    c.writer.write(b"".join(pieces))
    await c.writer.drain()
    await c.close()
    fresh = await Client.connect(env)
    assert await fresh.cmd(b"zz NOOP") == [b"zz OK NOOP completed"]
    await fresh.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
