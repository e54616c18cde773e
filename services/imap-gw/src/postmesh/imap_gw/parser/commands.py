"""Typed IMAP commands and the parser from a complete command buffer to one of them.

``command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF``
(RFC 9051 §9). Each command class carries only what its handler needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from postmesh.imap_gw.parser.append import parse_append
from postmesh.imap_gw.parser.base import Command as Command  # re-exported
from postmesh.imap_gw.parser.copy import Copy, Move, copy_parser
from postmesh.imap_gw.parser.cursor import Cursor, is_astring_char
from postmesh.imap_gw.parser.errors import NotSupported, ParseError, UnknownCommand
from postmesh.imap_gw.parser.fetch import (
    NO_MODIFIERS,
    FetchAtt,
    FetchModifiers,
    parse_fetch_atts,
    parse_fetch_modifiers,
)
from postmesh.imap_gw.parser.mailbox import ListCmd as ListCmd  # re-exported
from postmesh.imap_gw.parser.mailbox import (
    parse_create,
    parse_delete,
    parse_getquota,
    parse_getquotaroot,
    parse_id,
    parse_list,
    parse_rename,
    parse_setquota,
    parse_subscribe,
    parse_unsubscribe,
)
from postmesh.imap_gw.parser.search import search_parser
from postmesh.imap_gw.parser.sequence import SequenceSet, parse_sequence_set
from postmesh.imap_gw.parser.sort import sort_parser, thread_parser
from postmesh.imap_gw.parser.store import (
    NO_SELECT_PARAMS,
    SelectParams,
    parse_expunge,
    parse_idle,
    parse_select_params,
    parse_uid_expunge,
    store_parser,
)


@dataclass(frozen=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Check(Command):
    """IMAP4rev1 CHECK (RFC 3501 §6.4.1): a checkpoint; for us the same as NOOP."""

    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True)
class StartTls(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    username: bytes = b""
    password: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Authenticate(Command):
    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str = ""
    # SASL-IR (RFC 4959): the initial response as sent (base64, "=" for empty), or None.
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Enable(Command):
    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Select(Command):
    name: ClassVar[str] = "SELECT"
    mailbox: bytes = b""
    params: SelectParams = NO_SELECT_PARAMS  # CONDSTORE / QRESYNC (RFC 7162)

    @property
    def readonly(self) -> bool:
        return False


@dataclass(frozen=True)
class Examine(Select):
    name: ClassVar[str] = "EXAMINE"

    @property
    def readonly(self) -> bool:
        return True


@dataclass(frozen=True)
class Lsub(Command):
    """IMAP4rev1 LSUB (RFC 3501 §6.3.9): LIST restricted to subscribed mailboxes."""

    name: ClassVar[str] = "LSUB"
    reference: bytes = b""
    pattern: bytes = b""


@dataclass(frozen=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True)
class Status(Command):
    name: ClassVar[str] = "STATUS"
    mailbox: bytes = b""
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True)
class Fetch(Command):
    name: ClassVar[str] = "FETCH"
    sequence: SequenceSet
    attributes: tuple[FetchAtt, ...]
    uid: bool = False
    modifiers: FetchModifiers = NO_MODIFIERS

    @property
    def label(self) -> str:
        return "UID FETCH" if self.uid else "FETCH"


# -- argument parsers ------------------------------------------------------------------------------

Parser = Callable[[str, Cursor], Command]


def _no_args(cls: type[Command]) -> Parser:
    def parse(tag: str, cur: Cursor) -> Command:
        cur.expect_end()
        return cls(tag)

    return parse


def _login(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    user = cur.astring("a user name")
    cur.expect_sp()
    password = cur.astring("a password")
    cur.expect_end()
    return Login(tag, user, password)


def _authenticate(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    mechanism = cur.atom("a SASL mechanism").upper()
    initial = None
    if cur.skip(b" "):
        # initial-resp = base64 / "=" (RFC 4959 §4)
        initial = cur.take_while(lambda c: c in _BASE64 or c == 0x3D)
        if not initial:
            raise cur.error("expected a base64 initial response")
    cur.expect_end()
    return Authenticate(tag, mechanism, initial)


_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _enable(tag: str, cur: Cursor) -> Command:
    caps: list[str] = []
    while cur.skip(b" "):
        caps.append(cur.atom("a capability").upper())
    if not caps:
        raise cur.error("expected at least one capability")
    cur.expect_end()
    return Enable(tag, tuple(caps))


def _mailbox_arg(cls: type[Select]) -> Parser:
    def parse(tag: str, cur: Cursor) -> Command:
        cur.expect_sp()
        mailbox = cur.astring("a mailbox name")
        return cls(tag, mailbox, parse_select_params(cur))

    return parse


def _lsub(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    reference = cur.astring("a reference name")
    cur.expect_sp()
    pattern = cur.list_mailbox()
    cur.expect_end()
    return Lsub(tag, reference, pattern)


def _status(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    mailbox = cur.astring("a mailbox name")
    cur.expect_sp()
    items = tuple(i.upper() for i in cur.paren_list("a status item"))
    if not items:
        raise ParseError("STATUS needs at least one item")
    cur.expect_end()
    return Status(tag, mailbox, items)


def _fetch(uid: bool) -> Parser:
    def parse(tag: str, cur: Cursor) -> Command:
        cur.expect_sp()
        seq = parse_sequence_set(cur, allow_saved=True)  # "$": RFC 5182 §2.1
        cur.expect_sp()
        atts = parse_fetch_atts(cur)
        modifiers = parse_fetch_modifiers(cur) if cur.skip(b" ") else NO_MODIFIERS
        cur.expect_end()
        if modifiers.vanished and not uid:
            raise ParseError("VANISHED is only valid with UID FETCH (RFC 7162 §3.2.6)")
        return Fetch(tag, seq, atts, uid, modifiers)

    return parse


COMMANDS: dict[str, Parser] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "CHECK": _no_args(Check),
    "LOGOUT": _no_args(Logout),
    "STARTTLS": _no_args(StartTls),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "SELECT": _mailbox_arg(Select),
    "EXAMINE": _mailbox_arg(Examine),
    "LIST": parse_list,
    "CREATE": parse_create,
    "DELETE": parse_delete,
    "RENAME": parse_rename,
    "SUBSCRIBE": parse_subscribe,
    "UNSUBSCRIBE": parse_unsubscribe,
    "ID": parse_id,
    "GETQUOTA": parse_getquota,
    "GETQUOTAROOT": parse_getquotaroot,
    "SETQUOTA": parse_setquota,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _status,
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "FETCH": _fetch(uid=False),
    "STORE": store_parser(uid=False),
    "EXPUNGE": parse_expunge,
    "IDLE": parse_idle,
    "SEARCH": search_parser(uid=False),
    "SORT": sort_parser(uid=False),
    "THREAD": thread_parser(uid=False),
    "COPY": copy_parser(Copy, uid=False),
    "MOVE": copy_parser(Move, uid=False),
    "APPEND": parse_append,
}
UID_COMMANDS: dict[str, Parser] = {
    "STORE": store_parser(uid=True),
    "EXPUNGE": parse_uid_expunge,
    "FETCH": _fetch(uid=True),
    "SEARCH": search_parser(uid=True),
    "SORT": sort_parser(uid=True),
    "THREAD": thread_parser(uid=True),
    "COPY": copy_parser(Copy, uid=True),
    "MOVE": copy_parser(Move, uid=True),
}

# Commands of RFC 9051/3501 that later work will add: answered NO [CANNOT] "not supported yet"
# rather than BAD "unknown command", so a client log tells the two apart.
NOT_YET: frozenset[str] = frozenset()


def parse_tag(data: bytes) -> str | None:
    """The tag at the start of a command line, if there is a valid one followed by a space."""
    cur = Cursor(data)
    tag = cur.take_while(lambda c: is_astring_char(c) and c != 0x2B)
    if tag and cur.peek() == 0x20:
        return tag.decode("ascii")
    return None


def command_name(data: bytes) -> str | None:
    """The (upper-case) command name of a command line, with ``UID`` joined: ``UID FETCH``."""
    parts = data.split(b" ", 3)
    if len(parts) < 2:
        return None
    name = parts[1].strip(b"\r\n").upper()
    if name == b"UID" and len(parts) > 2:
        name += b" " + parts[2].strip(b"\r\n").upper()
    return name.decode("ascii", "replace")


def is_supported(name: str) -> bool:
    if name.startswith("UID "):
        return name[4:] in UID_COMMANDS
    return name in COMMANDS


def parse_command(data: bytes) -> Command:
    """Parse one complete command (without its final CRLF)."""
    cur = Cursor(data)
    tag_bytes = cur.take_while(lambda c: is_astring_char(c) and c != 0x2B)
    if not tag_bytes or not cur.skip(b" "):
        raise ParseError("Missing or invalid tag")
    tag = tag_bytes.decode("ascii")
    try:
        name = cur.atom("a command name").upper()
        table = COMMANDS
        if name == "UID":
            cur.expect_sp()
            name = cur.atom("a command name after UID").upper()
            table = UID_COMMANDS
            full = f"UID {name}"
        else:
            full = name
        parser = table.get(name)
        if parser is None:
            if name in NOT_YET:
                raise NotSupported(f"{full} is not supported yet", code="CANNOT")
            raise UnknownCommand(f"unknown command {full[:40]!r}")
        return parser(tag, cur)
    except ParseError as e:
        e.tag = tag
        raise
