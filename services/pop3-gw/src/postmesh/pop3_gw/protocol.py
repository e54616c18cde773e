"""POP3 command parsing and response formatting, free of any I/O.

One command line (without its CRLF) becomes one typed command, with arguments validated as
RFC 1939 §3 and §5-7, RFC 2449 (CAPA), RFC 2595 (STLS) and RFC 5034 (AUTH) describe them.
Whether a command is allowed in the current state is the session's business, not the parser's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# RFC 2449 §8 / RFC 3206 response codes.
AUTH = "AUTH"
SYS_TEMP = "SYS/TEMP"
SYS_PERM = "SYS/PERM"
IN_USE = "IN-USE"
LOGIN_DELAY = "LOGIN-DELAY"


@dataclass(frozen=True, slots=True)
class User:
    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    password: str


@dataclass(frozen=True, slots=True)
class Auth:
    """``AUTH`` alone lists mechanisms (the pre-RFC 5034 convention clients still probe with)."""

    mechanism: str | None
    initial_response: str | None


@dataclass(frozen=True, slots=True)
class Capa:
    pass


@dataclass(frozen=True, slots=True)
class Stls:
    pass


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class List:
    msg: int | None


@dataclass(frozen=True, slots=True)
class Uidl:
    msg: int | None


@dataclass(frozen=True, slots=True)
class Retr:
    msg: int


@dataclass(frozen=True, slots=True)
class Top:
    msg: int
    lines: int


@dataclass(frozen=True, slots=True)
class Dele:
    msg: int


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Utf8:
    """RFC 6856 §2: UTF-8 in user names, passwords and message headers."""


Command = (
    User
    | Pass
    | Auth
    | Capa
    | Stls
    | Stat
    | List
    | Uidl
    | Retr
    | Top
    | Dele
    | Noop
    | Rset
    | Quit
    | Utf8
)

KEYWORDS = frozenset(
    {"USER", "PASS", "AUTH", "CAPA", "STLS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE"}
    | {"NOOP", "RSET", "QUIT", "UTF8"}
)

# Message numbers and line counts are decimal; ten digits is far beyond any real maildrop and
# keeps int() away from absurd inputs.
_MAX_DIGITS = 10


class ParseError(ValueError):
    """The line is not a valid command; ``keyword`` is the recognised keyword or "unknown"."""

    def __init__(self, text: str, keyword: str = "unknown") -> None:
        super().__init__(text)
        self.text = text
        self.keyword = keyword


def printable(raw: str, limit: int = 32) -> str:
    """A client string made safe to echo in a response or a log (no CR/LF injection)."""
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in raw[:limit])
    return cleaned + ("..." if len(raw) > limit else "")


def _number(arg: str, keyword: str, what: str, *, allow_zero: bool) -> int:
    if not (arg.isascii() and arg.isdigit()) or len(arg) > _MAX_DIGITS:
        raise ParseError(f"Invalid {what}: {printable(arg)}", keyword)
    value = int(arg)
    if value == 0 and not allow_zero:
        # RFC 1939 §3: messages are numbered from 1.
        raise ParseError(f"Invalid {what}: 0", keyword)
    return value


def _args(rest: str, keyword: str, minimum: int, maximum: int) -> list[str]:
    args = rest.split()
    if len(args) < minimum:
        raise ParseError(
            f"{keyword} needs an argument" if minimum == 1 else "Missing arguments", keyword
        )
    if len(args) > maximum:
        raise ParseError("Too many arguments", keyword)
    return args


def parse_command(line: bytes) -> Command:
    """Parse one command line (CRLF already removed) or raise :class:`ParseError`."""
    if not line.strip():
        raise ParseError("Empty command")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Command is not valid UTF-8") from None
    if "\x00" in text:
        raise ParseError("NUL in command")
    # RFC 1939 §3: a keyword, then arguments separated by single spaces; be lenient on spacing.
    word, _, rest = text.lstrip(" ").partition(" ")
    keyword = word.upper()
    if keyword not in KEYWORDS:
        raise ParseError(f"Unknown command: {printable(word)}")

    if keyword == "PASS":
        # RFC 1939 §7: PASS has exactly one argument, so spaces belong to the password.
        if not rest:
            raise ParseError("PASS needs an argument", keyword)
        return Pass(rest)
    if keyword == "USER":
        return User(_args(rest, keyword, 1, 1)[0])
    if keyword == "AUTH":
        args = _args(rest, keyword, 0, 2)
        if not args:
            return Auth(None, None)
        return Auth(args[0].upper(), args[1] if len(args) > 1 else None)
    if keyword in ("LIST", "UIDL"):
        args = _args(rest, keyword, 0, 1)
        msg = _number(args[0], keyword, "message number", allow_zero=False) if args else None
        return List(msg) if keyword == "LIST" else Uidl(msg)
    if keyword in ("RETR", "DELE"):
        args = _args(rest, keyword, 1, 1)
        msg = _number(args[0], keyword, "message number", allow_zero=False)
        return Retr(msg) if keyword == "RETR" else Dele(msg)
    if keyword == "TOP":
        args = _args(rest, keyword, 2, 2)
        return Top(
            _number(args[0], keyword, "message number", allow_zero=False),
            _number(args[1], keyword, "line count", allow_zero=True),
        )
    _args(rest, keyword, 0, 0)
    simple: dict[str, Command] = {
        "CAPA": Capa(),
        "STLS": Stls(),
        "STAT": Stat(),
        "NOOP": Noop(),
        "RSET": Rset(),
        "QUIT": Quit(),
        "UTF8": Utf8(),
    }
    return simple[keyword]


def keyword_of(command: Command) -> str:
    """The metric label of a command."""
    return type(command).__name__.upper()


def ok(text: str = "") -> bytes:
    return (f"+OK {text}" if text else "+OK").encode() + b"\r\n"


def err(text: str, code: str | None = None) -> bytes:
    """``-ERR [CODE] text`` (RFC 2449 §8: the code in brackets right after -ERR)."""
    prefix = f"-ERR [{code}] " if code else "-ERR "
    return (prefix + text).encode() + b"\r\n"


def multiline(first: str, lines: Iterable[str]) -> bytes:
    """``+OK first``, the lines byte-stuffed (RFC 1939 §3), then the terminating ".\\r\\n"."""
    out = [ok(first)]
    for line in lines:
        data = line.encode()
        out.append((b"." + data if data.startswith(b".") else data) + b"\r\n")
    out.append(b".\r\n")
    return b"".join(out)
