"""FETCH data items (RFC 9051 §6.4.5, grammar ``fetch-att``), macros and sections."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from postmesh.imap_gw.parser.cursor import Cursor
from postmesh.imap_gw.parser.errors import ParseError
from postmesh.imap_gw.parser.store import mod_sequence


class FetchKind(enum.Enum):
    FLAGS = "FLAGS"
    UID = "UID"
    RFC822_SIZE = "RFC822.SIZE"
    INTERNALDATE = "INTERNALDATE"
    ENVELOPE = "ENVELOPE"
    BODYSTRUCTURE = "BODYSTRUCTURE"
    BODY_STRUCTURE = "BODY"  # BODY without a section: the non-extensible BODYSTRUCTURE
    RFC822 = "RFC822"  # = BODY[] (RFC 3501 §6.4.5), sets \Seen
    RFC822_HEADER = "RFC822.HEADER"  # = BODY.PEEK[HEADER]
    RFC822_TEXT = "RFC822.TEXT"  # = BODY[TEXT], sets \Seen
    BODY_SECTION = "BODY[]"  # BODY[section]<partial> and BODY.PEEK[...]
    BINARY = "BINARY[]"  # BINARY[section]<partial> and BINARY.PEEK[...] (RFC 3516)
    BINARY_SIZE = "BINARY.SIZE"
    MODSEQ = "MODSEQ"  # RFC 7162 §3.1.4.1


@dataclass(frozen=True)
class Section:
    """``section-spec``: part numbers, then HEADER / HEADER.FIELDS[.NOT] (fields) / TEXT / MIME."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_field_out(f) for f in self.fields) + ")"
        return spec


def _field_out(name: str) -> str:
    # header-fld-name = astring; names from a client are atoms in practice, else quote.
    if name and all(0x20 < ord(c) < 0x7F and c not in '(){ %*"\\]' for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class FetchAtt:
    kind: FetchKind
    section: Section | None = None
    partial: tuple[int, int] | None = None  # <origin.count>
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """Fetching message text sets \\Seen unless it is a PEEK (RFC 9051 §6.4.5)."""
        if self.kind in (FetchKind.RFC822, FetchKind.RFC822_TEXT):
            return True
        return self.kind in (FetchKind.BODY_SECTION, FetchKind.BINARY) and not self.peek

    def response_name(self) -> str:
        """The item name in the FETCH response: PEEK is dropped, the partial shows its origin."""
        if self.kind in (FetchKind.BODY_SECTION, FetchKind.BINARY):
            base = "BODY" if self.kind is FetchKind.BODY_SECTION else "BINARY"
            name = f"{base}[{self.section or ''}]"
            if self.partial is not None:
                name += f"<{self.partial[0]}>"
            return name
        if self.kind is FetchKind.BINARY_SIZE:
            return f"BINARY.SIZE[{self.section or ''}]"
        return str(self.kind.value)


_SIMPLE = {
    k.value: k
    for k in (
        FetchKind.FLAGS,
        FetchKind.UID,
        FetchKind.RFC822_SIZE,
        FetchKind.INTERNALDATE,
        FetchKind.ENVELOPE,
        FetchKind.BODYSTRUCTURE,
        FetchKind.RFC822,
        FetchKind.RFC822_HEADER,
        FetchKind.RFC822_TEXT,
        FetchKind.MODSEQ,
    )
}

# RFC 9051 §6.4.5: ALL, FAST and FULL are macros, usable only alone.
MACROS: dict[str, tuple[FetchAtt, ...]] = {
    "FAST": (
        FetchAtt(FetchKind.FLAGS),
        FetchAtt(FetchKind.INTERNALDATE),
        FetchAtt(FetchKind.RFC822_SIZE),
    ),
}
MACROS["ALL"] = (*MACROS["FAST"], FetchAtt(FetchKind.ENVELOPE))
MACROS["FULL"] = (*MACROS["ALL"], FetchAtt(FetchKind.BODY_STRUCTURE))


def _is_name_char(c: int) -> bool:
    return (0x41 <= c <= 0x5A) or (0x61 <= c <= 0x7A) or (0x30 <= c <= 0x39) or c == 0x2E


def _section(cur: Cursor, *, binary: bool) -> Section:
    cur.expect(b"[")
    if cur.skip(b"]"):
        return Section()
    start = cur.pos
    while (c := cur.peek()) is not None and c not in (0x5D, 0x20):
        cur.pos += 1
    spec = cur.data[start : cur.pos].decode("ascii", "replace").upper()
    pieces = spec.split(".")
    if "" in pieces:
        raise ParseError(f"invalid section {spec!r}")
    part: list[int] = []
    while pieces and pieces[0].isdigit():
        n = int(pieces.pop(0))
        if n == 0 or n > 2**32 - 1:
            raise ParseError("invalid section part number")
        part.append(n)
    text = ".".join(pieces) or None
    if binary and text is not None:
        raise ParseError("BINARY takes only a part number section (RFC 3516)")
    allowed = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"} | (
        {"MIME"} if part else set()
    )
    if text is not None and text not in allowed:
        raise ParseError(f"invalid section {spec!r}")
    fields: list[str] = []
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cur.expect_sp()
        cur.expect(b"(")
        while True:
            fields.append(cur.astring("a header field name").decode("utf-8", "replace"))
            if cur.skip(b")"):
                break
            cur.expect_sp()
    cur.expect(b"]")
    return Section(tuple(part), text, tuple(fields))


def _partial(cur: Cursor) -> tuple[int, int] | None:
    if not cur.skip(b"<"):
        return None
    origin = cur.number()
    cur.expect(b".")
    count = cur.number(nonzero=True)
    cur.expect(b">")
    return origin, count


def parse_fetch_att(cur: Cursor) -> FetchAtt:
    start = cur.pos
    while (c := cur.peek()) is not None and _is_name_char(c):
        cur.pos += 1
    name = cur.data[start : cur.pos].decode("ascii").upper()
    if not name:
        raise cur.error("expected a fetch attribute")
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and cur.peek_is(b"["):
        binary = name.startswith("BINARY")
        section = _section(cur, binary=binary)
        if name == "BINARY.SIZE":
            return FetchAtt(FetchKind.BINARY_SIZE, section)
        kind = FetchKind.BINARY if binary else FetchKind.BODY_SECTION
        return FetchAtt(kind, section, _partial(cur), peek=name.endswith(".PEEK"))
    if name == "BODY":
        return FetchAtt(FetchKind.BODY_STRUCTURE)
    if name in _SIMPLE:
        return FetchAtt(_SIMPLE[name])
    raise ParseError(f"unknown fetch attribute {name!r}")


def parse_fetch_atts(cur: Cursor) -> tuple[FetchAtt, ...]:
    """``"ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")"``."""
    if cur.skip(b"("):
        atts = [parse_fetch_att(cur)]
        while not cur.skip(b")"):
            cur.expect_sp()
            atts.append(parse_fetch_att(cur))
        return tuple(atts)
    save = cur.pos
    word = cur.take_while(lambda c: 0x41 <= (c & ~0x20) <= 0x5A).decode("ascii").upper()
    if word in MACROS and (cur.at_end() or cur.peek() == 0x20):
        return MACROS[word]
    cur.pos = save
    return (parse_fetch_att(cur),)


@dataclass(frozen=True)
class FetchModifiers:
    """``fetch-modifiers`` (RFC 7162 §3.1.4.1, §3.2.6): CHANGEDSINCE and VANISHED."""

    changed_since: int | None = None
    vanished: bool = False


NO_MODIFIERS = FetchModifiers()


def parse_fetch_modifiers(cur: Cursor) -> FetchModifiers:
    """``SP "(" fetch-modifier *(SP fetch-modifier) ")"``, the leading SP already consumed;
    each modifier at most once, VANISHED only with CHANGEDSINCE (RFC 7162 §3.2.6)."""
    cur.expect(b"(")
    changed_since: int | None = None
    vanished = False
    while True:
        name = cur.atom("a FETCH modifier").upper()
        if name == "CHANGEDSINCE" and changed_since is None:
            cur.expect_sp()
            changed_since = mod_sequence(cur, allow_zero=True)
        elif name == "VANISHED" and not vanished:
            vanished = True
        elif name in ("CHANGEDSINCE", "VANISHED"):
            raise ParseError(f"FETCH modifier {name} given twice")
        else:
            raise ParseError(f"unknown FETCH modifier {name[:30]!r}")
        if cur.skip(b")"):
            break
        cur.expect_sp()
    if vanished and changed_since is None:
        raise ParseError("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)")
    return FetchModifiers(changed_since, vanished)
