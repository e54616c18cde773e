"""Mailbox-management commands: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (with
LIST-EXTENDED), ID and the QUOTA commands, typed, with their argument parsers (no I/O).

Grammar: RFC 9051 §9, RFC 5258 §6 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154 §6
(CREATE-SPECIAL-USE), RFC 2971 §4 (ID), RFC 9208 §9 (QUOTA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.cursor import Cursor, is_atom_char
from postmesh.imap_gw.parser.errors import ParseError

# RFC 2971 §3.3: the limits a client must keep to (a server may refuse more).
ID_MAX_PAIRS = 30
ID_MAX_FIELD = 30
ID_MAX_VALUE = 1024


@dataclass(frozen=True)
class Create(Command):
    name: ClassVar[str] = "CREATE"
    mailbox: bytes = b""
    # RFC 6154 §3 USE (...): special-use attributes with their backslash, as sent.
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delete(Command):
    name: ClassVar[str] = "DELETE"
    mailbox: bytes = b""


@dataclass(frozen=True)
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    mailbox: bytes = b""
    new_name: bytes = b""


@dataclass(frozen=True)
class Subscribe(Command):
    name: ClassVar[str] = "SUBSCRIBE"
    mailbox: bytes = b""


@dataclass(frozen=True)
class Unsubscribe(Command):
    name: ClassVar[str] = "UNSUBSCRIBE"
    mailbox: bytes = b""


@dataclass(frozen=True)
class ListCmd(Command):
    """LIST with the RFC 9051 / RFC 5258 syntax: selection options, one or more patterns,
    return options; ``status`` holds the items of a STATUS return option (RFC 5819)."""

    name: ClassVar[str] = "LIST"
    reference: bytes = b""
    patterns: tuple[bytes, ...] = ()
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status: tuple[str, ...] = ()


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971: the client's identification, None for ``ID NIL``."""

    name: ClassVar[str] = "ID"
    params: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True)
class GetQuota(Command):
    name: ClassVar[str] = "GETQUOTA"
    root: bytes = b""


@dataclass(frozen=True)
class GetQuotaRoot(Command):
    name: ClassVar[str] = "GETQUOTAROOT"
    mailbox: bytes = b""


@dataclass(frozen=True)
class SetQuota(Command):
    name: ClassVar[str] = "SETQUOTA"
    root: bytes = b""
    limits: tuple[tuple[str, int], ...] = ()


# -- helpers ---------------------------------------------------------------------------------------


def _is_nil(cur: Cursor) -> bool:
    """Consume ``NIL`` (any case) if it is the next whole token."""
    end = cur.pos + 3
    if cur.data[cur.pos : end].upper() != b"NIL":
        return False
    if end < len(cur.data) and is_atom_char(cur.data[end]):
        return False
    cur.pos = end
    return True


def _mailbox(cur: Cursor) -> bytes:
    cur.expect_sp()
    return cur.astring("a mailbox name")


def _flag_like(cur: Cursor, what: str) -> str:
    """``"\\" atom``: a special-use attribute (RFC 6154 §6 use-attr)."""
    if not cur.skip(b"\\"):
        raise cur.error(f"expected {what}")
    return "\\" + cur.atom(what)


# -- parsers ---------------------------------------------------------------------------------------


def parse_create(tag: str, cur: Cursor) -> Command:
    """``CREATE mailbox [SP "(" create-param *(SP create-param) ")"]`` (RFC 4466 §2.2); the
    only parameter known is ``USE (use-attr ...)`` (RFC 6154 §3)."""
    mailbox = _mailbox(cur)
    uses: list[str] = []
    if cur.skip(b" "):
        cur.expect(b"(")
        while True:
            param = cur.atom("a CREATE parameter").upper()
            if param != "USE":
                raise ParseError(f"Unknown CREATE parameter {param[:40]}")
            cur.expect_sp()
            cur.expect(b"(")
            if not cur.skip(b")"):
                while True:
                    uses.append(_flag_like(cur, "a special-use attribute"))
                    if cur.skip(b")"):
                        break
                    cur.expect_sp()
            if cur.skip(b")"):
                break
            cur.expect_sp()
    cur.expect_end()
    return Create(tag, mailbox, tuple(uses))


def _single_mailbox(
    cls: type[Delete] | type[Subscribe] | type[Unsubscribe],
) -> Callable[[str, Cursor], Command]:
    def parse(tag: str, cur: Cursor) -> Command:
        mailbox = _mailbox(cur)
        cur.expect_end()
        return cls(tag, mailbox)

    return parse


parse_delete = _single_mailbox(Delete)
parse_subscribe = _single_mailbox(Subscribe)
parse_unsubscribe = _single_mailbox(Unsubscribe)


def parse_rename(tag: str, cur: Cursor) -> Command:
    old = _mailbox(cur)
    new = _mailbox(cur)
    cur.expect_end()
    return Rename(tag, old, new)


def _return_options(cur: Cursor) -> tuple[list[str], list[str]]:
    """``RETURN (return-option ...)``; ``STATUS (status-att ...)`` is one (RFC 5819 §2)."""
    if cur.atom("RETURN").upper() != "RETURN":
        raise ParseError("expected RETURN after the mailbox patterns")
    cur.expect_sp()
    cur.expect(b"(")
    returns: list[str] = []
    status: list[str] = []
    if cur.skip(b")"):
        return returns, status
    while True:
        opt = cur.atom("a return option").upper()
        returns.append(opt)
        if opt == "STATUS":
            cur.expect_sp()
            status = [s.upper() for s in cur.paren_list("a status item")]
            if not status:
                raise ParseError("STATUS return option needs at least one item")
        if cur.skip(b")"):
            return returns, status
        cur.expect_sp()


def parse_list(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    selection: list[str] = []
    if cur.peek_is(b"("):
        selection = [s.upper() for s in cur.paren_list("a selection option")]
        cur.expect_sp()
    reference = cur.astring("a reference name")
    cur.expect_sp()
    patterns: list[bytes] = []
    if cur.skip(b"("):
        while True:
            patterns.append(cur.list_mailbox())
            if cur.skip(b")"):
                break
            cur.expect_sp()
    else:
        patterns.append(cur.list_mailbox())
    returns: list[str] = []
    status: list[str] = []
    if cur.skip(b" "):
        returns, status = _return_options(cur)
    cur.expect_end()
    return ListCmd(tag, reference, tuple(patterns), tuple(selection), tuple(returns), tuple(status))


def parse_id(tag: str, cur: Cursor) -> Command:
    """``ID SP ("(" *(string SP nstring) ")" / nil)`` (RFC 2971 §4)."""
    cur.expect_sp()
    if _is_nil(cur):
        cur.expect_end()
        return Id(tag, None)
    cur.expect(b"(")
    pairs: list[tuple[str, str | None]] = []
    if not cur.skip(b")"):
        while True:
            field = cur.string()
            if len(field) > ID_MAX_FIELD:
                raise ParseError(f"ID field name longer than {ID_MAX_FIELD} octets")
            cur.expect_sp()
            value: bytes | None = None if _is_nil(cur) else cur.string()
            if value is not None and len(value) > ID_MAX_VALUE:
                raise ParseError(f"ID value longer than {ID_MAX_VALUE} octets")
            pairs.append(
                (
                    field.decode("utf-8", "replace"),
                    None if value is None else value.decode("utf-8", "replace"),
                )
            )
            if len(pairs) > ID_MAX_PAIRS:
                raise ParseError(f"more than {ID_MAX_PAIRS} ID field-value pairs")
            if cur.skip(b")"):
                break
            cur.expect_sp()
    cur.expect_end()
    return Id(tag, tuple(pairs))


def parse_getquota(tag: str, cur: Cursor) -> Command:
    cur.expect_sp()
    root = cur.astring("a quota root name")
    cur.expect_end()
    return GetQuota(tag, root)


def parse_getquotaroot(tag: str, cur: Cursor) -> Command:
    mailbox = _mailbox(cur)
    cur.expect_end()
    return GetQuotaRoot(tag, mailbox)


def parse_setquota(tag: str, cur: Cursor) -> Command:
    """``SETQUOTA quota-root-name SP "(" [resource-name SP number64 *(...)] ")"`` (RFC 9208
    §4.1.3)."""
    cur.expect_sp()
    root = cur.astring("a quota root name")
    cur.expect_sp()
    cur.expect(b"(")
    limits: list[tuple[str, int]] = []
    if not cur.skip(b")"):
        while True:
            resource = cur.atom("a resource name").upper()
            cur.expect_sp()
            limits.append((resource, _number64(cur)))
            if cur.skip(b")"):
                break
            cur.expect_sp()
    cur.expect_end()
    return SetQuota(tag, root, tuple(limits))


def _number64(cur: Cursor) -> int:
    digits = cur.take_while(lambda c: 0x30 <= c <= 0x39)
    if not digits or int(digits) > 2**63 - 1:
        raise cur.error("expected a number (0 to 2^63-1)")
    return int(digits)
