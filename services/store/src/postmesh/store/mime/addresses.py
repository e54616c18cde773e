"""RFC 5322 §3.4 address lists as IMAP ENVELOPE address structures (RFC 9051 §7.5.2).

A hand-written, lenient parser: the email package's parser is private API, slow, and drops
the group structure IMAP needs. Each address is (name, adl, mailbox, host); a group is
announced by (name="", adl="", mailbox=<group name>, host="") and closed by all-empty.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from postmesh.store.mime.headers import MAX_STRUCTURED_CHARS, comment_end, decode_words

# c-client's marker for a mailbox without a domain: an empty host would read as a group start.
MISSING_HOST = ".MISSING-HOST-NAME."
MAX_ADDRESSES = 10_000

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
      |(?P<qs>"(?:[^"\\]|\\.)*(?:"|\Z))
      |(?P<dl>\[(?:[^\]\\]|\\.)*(?:\]|\Z))
      |(?P<sp>[<>@,;:.])
      |(?P<cm>\()
      |(?P<atom>[^ \t\r\n()<>@,;:."\[\]]+)
      |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


class Address(NamedTuple):
    name: str
    adl: str
    mailbox: str
    host: str


class _Tok(NamedTuple):
    kind: str  # "atom", "qs" (quoted string, unquoted text), "dl" (domain literal), "sp"
    text: str
    ws: bool  # white space or a comment precedes it


def _tokenize(value: str) -> tuple[list[_Tok], list[int], list[str]]:
    """Tokens; for each token the number of comments seen before it; the comments' text."""
    toks: list[_Tok] = []
    comment_marks: list[int] = []
    comments: list[str] = []
    ws = False
    if "(" not in value:
        # No comments: one pass in C over the tokens.
        for tm in _TOKEN.finditer(value):
            kind = tm.lastgroup or "other"
            if kind == "ws":
                ws = True
                continue
            toks.append(_token(kind, tm.group(), ws))
            ws = False
        return toks, [0] * len(toks), comments
    i = 0
    n = len(value)
    while i < n:
        m = _TOKEN.match(value, i)
        if m is None:  # cannot happen: "other" matches any character
            break
        kind = m.lastgroup or "other"
        if kind == "cm":
            start = i
            i = comment_end(value, i)
            closed = value[i - 1] == ")" and i - 1 > start
            text = value[start + 1 : i - 1 if closed else i]
            comments.append(_UNESCAPE.sub(r"\1", text).strip())
            ws = True
            continue
        i = m.end()
        if kind == "ws":
            ws = True
            continue
        toks.append(_token(kind, m.group(), ws))
        comment_marks.append(len(comments))
        ws = False
    return toks, comment_marks, comments


def _token(kind: str, text: str, ws: bool) -> _Tok:
    if kind == "qs":
        body = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
        text = _UNESCAPE.sub(r"\1", body) if "\\" in body else body
    elif kind == "other":
        kind = "atom"
    return _Tok(kind, text, ws)


def _join(toks: list[_Tok], spaced: bool) -> str:
    """Token texts joined; with ``spaced``, one space where white space separated them."""
    if not spaced:
        return "".join(t.text for t in toks)
    out: list[str] = []
    for i, t in enumerate(toks):
        if i and t.ws:
            out.append(" ")
        out.append(t.text)
    return "".join(out)


def _clean(s: str) -> str:
    return " ".join(s.split()) if ("\n" in s or "\r" in s or "\t" in s) else s.strip()


def _phrase(toks: list[_Tok]) -> str:
    return _clean(decode_words(_join(toks, spaced=True)))


def _addr_spec(toks: list[_Tok]) -> tuple[str, str]:
    """(local part, domain) of an addr-spec; the local part as text (quotes removed). Stray
    specials other than "." (a lone ">", a second "@") are dropped."""
    at = next((i for i, t in enumerate(toks) if t.kind == "sp" and t.text == "@"), -1)
    words = [t for t in (toks if at < 0 else toks[:at]) if t.kind != "sp" or t.text == "."]
    if at < 0:
        return _join(words, spaced=True).strip(), ""
    domain = [t for t in toks[at + 1 :] if t.kind != "sp" or t.text == "."]
    return _join(words, spaced=False), _join(domain, spaced=False)


def _mailbox(
    toks: list[_Tok], comments: list[str], first_comment: int, last_comment: int
) -> Address | None:
    lt = next((i for i, t in enumerate(toks) if t.kind == "sp" and t.text == "<"), -1)
    if lt >= 0:
        gt = next(
            (i for i in range(lt + 1, len(toks)) if toks[i].kind == "sp" and toks[i].text == ">"),
            len(toks),
        )
        name = _phrase(toks[:lt])
        inner = toks[lt + 1 : gt]
        adl = ""
        # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec.
        if inner and inner[0].kind == "sp" and inner[0].text == "@":
            colon = next((i for i, t in enumerate(inner) if t.kind == "sp" and t.text == ":"), -1)
            if colon >= 0:
                adl = _join(inner[:colon], spaced=False)
                inner = inner[colon + 1 :]
        local, domain = _addr_spec(inner)
    else:
        name = ""
        adl = ""
        local, domain = _addr_spec(toks)
        # "user@host (Real Name)": the comment is the only name there is (as c-client and
        # Dovecot return it).
        if last_comment > first_comment:
            name = _clean(decode_words(comments[last_comment - 1]))
    if not (name or local or domain):
        return None
    return Address(name, adl, local, domain or MISSING_HOST)


def parse_addresses(value: str) -> list[Address]:
    """The addresses of an address-list header value, with group markers."""
    toks, marks, comments = _tokenize(value[:MAX_STRUCTURED_CHARS])
    n = len(toks)
    out: list[Address] = []

    def is_sp(i: int, chars: str) -> bool:
        return toks[i].kind == "sp" and toks[i].text in chars

    def mailbox_end(i: int, stops: str) -> int:
        """End of the mailbox starting at token i: a stop character outside <...>."""
        angle = False
        while i < n:
            t = toks[i]
            if t.kind == "sp":
                if t.text == "<":
                    angle = True
                elif t.text == ">":
                    angle = False
                elif not angle and t.text in stops:
                    return i
            i += 1
        return n

    def add_mailbox(i: int, j: int) -> None:
        if i < j:
            first = marks[i] if i < n else len(comments)
            last = marks[j] if j < n else len(comments)
            addr = _mailbox(toks[i:j], comments, first, last)
            if addr is not None:
                out.append(addr)

    i = 0
    while i < n and len(out) < MAX_ADDRESSES:
        if is_sp(i, ","):
            i += 1
            continue
        # A group is a phrase followed by ":" before any of < @ , ; (RFC 5322 §3.4).
        j = i
        while j < n and not is_sp(j, "<@,;:"):
            j += 1
        if j < n and is_sp(j, ":"):
            out.append(Address("", "", _phrase(toks[i:j]), ""))
            i = j + 1
            while i < n and len(out) < MAX_ADDRESSES:
                if is_sp(i, ","):
                    i += 1
                    continue
                if is_sp(i, ";"):
                    break
                k = mailbox_end(i, ",;")
                add_mailbox(i, k)
                i = k
            out.append(Address("", "", "", ""))
            i += 1  # the ";"
            continue
        k = mailbox_end(i, ",;")
        add_mailbox(i, k)
        i = k + 1 if k < n and is_sp(k, ";") else k
    return out
