"""SMTP wire syntax, free of I/O and state: MAIL/RCPT arguments (RFC 5321 §4.1.2), their ESMTP
parameters (SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531, DSN RFC 3461, REQUIRETLS
RFC 8689), DATA framing
(§4.1.1.4, §4.5.2), BDAT arguments (RFC 3030) and reply texts with RFC 3463 enhanced status
codes."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from postmesh.common.line_ends import normalize_bare_lf


class ProtocolError(Exception):
    """A command the client got wrong: ``reply`` goes on the wire, ``reason`` into metrics."""

    def __init__(self, reply: str, reason: str = "syntax") -> None:
        super().__init__(reply)
        self.reply = reply
        self.reason = reason


# RFC 5321 §4.5.3.1: limits in octets.
MAX_PATH_OCTETS = 256
MAX_DOMAIN_OCTETS = 255
# RFC 3461 §4.4: ENVID is at most 100 characters.
MAX_ENVID = 100

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_NON_ASCII = r"\u0080-\U0010ffff"


def _mailbox_patterns(utf8: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    extra = _NON_ASCII if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    dot_string = rf"{atom}(?:\.{atom})*"
    # Quoted-string = DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE (RFC 5321 §4.1.2)
    quoted = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{extra}]|\\[\x20-\x7e])*"'
    local = re.compile(rf"(?:{dot_string}|{quoted})")
    label = rf"[A-Za-z0-9{extra}](?:[A-Za-z0-9\-{extra}]*[A-Za-z0-9{extra}])?"
    domain = re.compile(rf"{label}(?:\.{label})*")
    return local, domain


_ASCII_PATTERNS = _mailbox_patterns(False)
_UTF8_PATTERNS = _mailbox_patterns(True)
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9\-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_ASCII_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_UTF8_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_NON_ASCII}]+")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")


def is_ascii(s: str) -> bool:
    return s.isascii()


def _valid_literal(lit: str) -> bool:
    """address-literal (RFC 5321 §4.1.3), without the brackets."""
    if lit.lower().startswith("ipv6:"):
        try:
            ipaddress.IPv6Address(lit[5:])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(lit)
        return True
    except ValueError:
        return _GENERAL_LITERAL.fullmatch(lit) is not None


def valid_domain(domain: str, utf8: bool) -> bool:
    if not domain or len(domain.encode("utf-8", "surrogateescape")) > MAX_DOMAIN_OCTETS:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return _valid_literal(domain[1:-1])
    _, dom_re = _UTF8_PATTERNS if utf8 else _ASCII_PATTERNS
    if dom_re.fullmatch(domain) is None:
        return False
    return all(len(label.encode()) <= 63 for label in domain.split("."))


def valid_mailbox(mailbox: str, utf8: bool) -> bool:
    """Mailbox = Local-part "@" ( Domain / address-literal ); UTF-8 only under SMTPUTF8."""
    local, at, domain = mailbox.rpartition("@")
    if not at or not local:
        return False
    local_re, _ = _UTF8_PATTERNS if utf8 else _ASCII_PATTERNS
    return local_re.fullmatch(local) is not None and valid_domain(domain, utf8)


def _split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path (without brackets) and the parameter text."""
    arg = arg.lstrip(" ")
    if not arg.startswith("<"):
        # RFC 5321 requires the angle brackets; Postfix (strict_rfc821_envelopes=no) and most
        # servers accept a bare address, and so do we.
        path, _, rest = arg.partition(" ")
        if not path or "<" in path or ">" in path:
            raise ProtocolError("501 5.5.4 Syntax error in parameters or arguments")
        return path, rest
    in_quotes = False
    i = 1
    while i < len(arg):
        c = arg[i]
        if in_quotes:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == ">":
            rest = arg[i + 1 :]
            if rest and not rest.startswith(" "):
                break
            return arg[1:i], rest
        i += 1
    raise ProtocolError("501 5.5.4 Syntax error in parameters or arguments")


def _strip_source_route(path: str, utf8: bool) -> str | None:
    """RFC 5321 §4.1.2 / Appendix C: a source route (``@a,@b:user@c``) must be accepted and its
    route ignored. Returns None if the route is malformed."""
    if not path.startswith("@"):
        return path
    route, colon, mailbox = path.partition(":")
    if not colon:
        return None
    for hop in route.split(","):
        if not hop.startswith("@") or not valid_domain(hop[1:], utf8):
            return None
    return mailbox


def _parse_params(text: str, utf8: bool) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    value_re = _UTF8_VALUE if utf8 else _ASCII_VALUE
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if _KEYWORD.fullmatch(key) is None or (eq and value_re.fullmatch(value) is None):
            raise ProtocolError("501 5.5.4 Syntax error in parameters or arguments")
        key = key.upper()
        if key in params:
            raise ProtocolError(f"501 5.5.4 Duplicate parameter {key}")
        params[key] = value if eq else None
    return params


def decode_xtext(value: str) -> str:
    """RFC 3461 §4: xtext, ``+XX`` hex escapes."""
    if _XTEXT.fullmatch(value) is None:
        raise ProtocolError("501 5.5.4 Invalid xtext encoding")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


# RFC 6152 §2 and RFC 3030 §3: the BODY values we take.
BODY_TYPES = ("7BIT", "8BITMIME", "BINARYMIME")
BINARYMIME = "BINARYMIME"


@dataclass(frozen=True, slots=True)
class MailCommand:
    sender: str  # "" is the null reverse path <>
    # "7BIT" / "8BITMIME" / "BINARYMIME" (RFC 3030 §3) as declared, "" when not declared
    body: str = ""
    smtputf8: bool = False
    size: int | None = None
    ret: str = ""
    envid: str = ""
    # RFC 8689 §2: the sender requires TLS on every hop; whether the session allows it (TLS)
    # is the caller's decision.
    requiretls: bool = False


@dataclass(frozen=True, slots=True)
class RcptCommand:
    address: str
    notify: list[str] = field(default_factory=list)
    orcpt: str = ""


def has_invalid_utf8(text: str) -> bool:
    """aiosmtpd decodes arguments with surrogateescape: lone surrogates mark bytes that were
    not UTF-8 (which protobuf strings, and RFC 6531, do not allow)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bad_helo_argument(arg: str) -> bool:
    """HELO/EHLO take a domain or an address literal (RFC 5321 §4.1.1.1): no control
    characters (a NUL would end the name in C-based log readers and peers) and valid UTF-8."""
    return not arg or has_invalid_utf8(arg) or _CONTROL.search(arg) is not None


def _strip_keyword(arg: str | None, keyword: str, syntax: str) -> str:
    """``FROM:<...>``; a space after the colon is tolerated (many clients send it)."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        raise ProtocolError(syntax)
    if has_invalid_utf8(arg):
        raise ProtocolError("501 5.6.7 Invalid UTF-8 in address or parameters", "bad_address")
    return arg[len(keyword) :]


def parse_mail(arg: str | None, *, esmtp: bool, max_size: int) -> MailCommand:
    """``MAIL FROM:<reverse-path> [SP params]`` (RFC 5321 §4.1.1.2)."""
    text = _strip_keyword(arg, "FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>")
    raw_path, rest = _split_path(text)
    params = _parse_params(rest, utf8=True)
    if params and not esmtp:
        # RFC 5321 §4.1.1.11: parameters need EHLO.
        raise ProtocolError("555 5.5.4 MAIL parameters need EHLO")
    smtputf8 = "SMTPUTF8" in params
    if smtputf8 and params.pop("SMTPUTF8") is not None:
        raise ProtocolError("501 5.5.4 SMTPUTF8 takes no value")
    if not smtputf8 and not (is_ascii(rest)):
        raise ProtocolError("501 5.5.4 Syntax error in parameters or arguments")

    sender = ""
    if raw_path:
        mailbox = _strip_source_route(raw_path, smtputf8)
        if mailbox is None or len(mailbox.encode("utf-8", "surrogateescape")) > MAX_PATH_OCTETS:
            raise ProtocolError("501 5.1.7 Bad sender address syntax", "bad_address")
        if not is_ascii(mailbox) and not smtputf8:
            # RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter.
            raise ProtocolError(
                "553 5.6.7 Non-ASCII addresses require the SMTPUTF8 parameter", "bad_address"
            )
        if not valid_mailbox(mailbox, smtputf8):
            raise ProtocolError("501 5.1.7 Bad sender address syntax", "bad_address")
        sender = mailbox

    size: int | None = None
    body = ret = envid = ""
    requiretls = False
    for key, value in params.items():
        if key == "SIZE":
            # RFC 1870 §6: size-value = 1*20DIGIT.
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise ProtocolError("501 5.5.4 Bad SIZE parameter")
            size = int(value)
            if size > max_size:
                raise ProtocolError(
                    "552 5.3.4 Message size exceeds fixed maximum message size", "too_big"
                )
        elif key == "BODY":
            if value is None or value.upper() not in BODY_TYPES:
                raise ProtocolError("501 5.5.4 Unsupported BODY parameter")
            body = value.upper()
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise ProtocolError("501 5.5.4 Bad RET parameter")
            ret = value.upper()
        elif key == "ENVID":
            if value is None:
                raise ProtocolError("501 5.5.4 Bad ENVID parameter")
            envid = decode_xtext(value)
            if len(envid) > MAX_ENVID:
                raise ProtocolError("501 5.5.4 ENVID too long")
        elif key == "REQUIRETLS":
            # RFC 8689 §3: a parameter without a value.
            if value is not None:
                raise ProtocolError("501 5.5.4 REQUIRETLS takes no value")
            requiretls = True
        elif key == "AUTH":
            # RFC 4954 §5: the AUTH= identity is only trusted from trusted relays; we have none,
            # so it is accepted and ignored (as Postfix does for untrusted clients).
            continue
        else:
            raise ProtocolError(f"555 5.5.4 Unsupported option: {key}")
    return MailCommand(sender, body, smtputf8, size, ret, envid, requiretls)


_NOTIFY_VALUES = {"SUCCESS", "FAILURE", "DELAY"}


def parse_rcpt(arg: str | None, *, esmtp: bool, smtputf8: bool) -> RcptCommand:
    """``RCPT TO:<forward-path> [SP params]`` (RFC 5321 §4.1.1.3)."""
    text = _strip_keyword(arg, "TO:", "501 5.5.4 Syntax: RCPT TO:<address>")
    raw_path, rest = _split_path(text)
    params = _parse_params(rest, utf8=smtputf8)
    if params and not esmtp:
        raise ProtocolError("555 5.5.4 RCPT parameters need EHLO")
    if raw_path.lower() == "postmaster":
        # RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
        address = "postmaster"
    else:
        mailbox = _strip_source_route(raw_path, smtputf8)
        if not raw_path or mailbox is None:
            raise ProtocolError("501 5.1.3 Bad recipient address syntax", "bad_address")
        if len(mailbox.encode("utf-8", "surrogateescape")) > MAX_PATH_OCTETS:
            raise ProtocolError("501 5.1.3 Bad recipient address syntax", "bad_address")
        if not is_ascii(mailbox) and not smtputf8:
            raise ProtocolError(
                "553 5.6.7 Non-ASCII addresses require the SMTPUTF8 parameter", "bad_address"
            )
        if not valid_mailbox(mailbox, smtputf8):
            raise ProtocolError("501 5.1.3 Bad recipient address syntax", "bad_address")
        address = mailbox
    notify: list[str] = []
    orcpt = ""
    for key, value in params.items():
        if key == "NOTIFY":
            # RFC 3461 §4.1: NEVER, or a list of SUCCESS, FAILURE, DELAY.
            items = (value or "").upper().split(",")
            if items == ["NEVER"]:
                notify = ["NEVER"]
            elif (
                items and all(i in _NOTIFY_VALUES for i in items) and len(set(items)) == len(items)
            ):
                notify = items
            else:
                raise ProtocolError("501 5.5.4 Bad NOTIFY parameter")
        elif key == "ORCPT":
            # RFC 3461 §4.2: addr-type ";" xtext; kept encoded, as the DSN quotes it so.
            addr_type, semi, xtext = (value or "").partition(";")
            if not semi or _KEYWORD.fullmatch(addr_type) is None or not xtext:
                raise ProtocolError("501 5.5.4 Bad ORCPT parameter")
            decode_xtext(xtext)
            orcpt = f"{addr_type};{xtext}"
        else:
            raise ProtocolError(f"555 5.5.4 Unsupported option: {key}")
    return RcptCommand(address, notify, orcpt)


def ehlo_keywords(
    *,
    max_size: int,
    starttls: bool,
    auth: bool,
    mechanisms: tuple[str, ...],
    requiretls: bool = False,
) -> list[str]:
    """The EHLO keywords (RFC 5321 §4.1.1.1) in the order Postfix lists them; REQUIRETLS
    (RFC 8689, which Postfix lacks) only when the caller says the session is under TLS."""
    words = ["PIPELINING", f"SIZE {max_size}"]
    if starttls:
        words.append("STARTTLS")
    if auth:
        words.append("AUTH " + " ".join(mechanisms))
    # CHUNKING and BINARYMIME (RFC 3030; ADR 40): binary content travels only by BDAT.
    words += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "BINARYMIME"]
    if requiretls:
        words.append("REQUIRETLS")
    return words


# --- BDAT (RFC 3030) --------------------------------------------------------------------------

# bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]; chunk-size = 1*DIGIT; end-marker = "LAST"
# (RFC 3030 §2). More than 18 digits is no size anyone sends, and would not fit an int64.
_BDAT = re.compile(r"([0-9]{1,18})(?: (LAST))?", re.IGNORECASE)
BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT chunk-size [LAST]"


@dataclass(frozen=True, slots=True)
class BdatCommand:
    size: int
    last: bool


def parse_bdat(arg: str | None) -> BdatCommand:
    match = _BDAT.fullmatch(arg or "")
    if match is None:
        raise ProtocolError(BDAT_SYNTAX)
    return BdatCommand(int(match.group(1)), match.group(2) is not None)


# --- reply texts ------------------------------------------------------------------------------

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
# aiosmtpd's own replies for the commands we leave to it, given RFC 3463 codes (RFC 2034 §4).
_KNOWN_REPLIES = {
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": "250 2.0.0 Ok",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "500 Command line too long": "500 5.5.2 Error: line too long",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    "500 Error: strict ASCII mode": "500 5.5.2 Error: bad syntax",
    "501 Syntax: QUIT": "501 5.5.4 Syntax: QUIT",
    "501 Syntax: NOOP": "501 5.5.4 Syntax: NOOP",
    "501 Syntax: STARTTLS": "501 5.5.4 Syntax: STARTTLS",
}
_DEFAULT_ENHANCED = {
    "2": "2.0.0",
    "4": "4.0.0",
    "5": "5.0.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "554": "5.0.0",
}


def with_enhanced_code(reply: str) -> str:
    """Give a one-line reply an RFC 3463 code if it lacks one. Greetings (220 banner), 334 and
    354 carry none (RFC 2034 §4)."""
    if reply in _KNOWN_REPLIES:
        return _KNOWN_REPLIES[reply]
    if reply.startswith('500 Error: command "'):
        # aiosmtpd echoes the unknown verb; we don't reflect client bytes back.
        return "500 5.5.2 Error: command not recognized"
    code = reply[:3]
    if len(reply) < 4 or not code.isdigit() or code[0] not in "245" or code == "220":
        return reply
    if _HAS_ENHANCED.match(reply):
        return reply
    enhanced = _DEFAULT_ENHANCED.get(code) or _DEFAULT_ENHANCED[code[0]]
    return f"{code}{reply[3]}{enhanced} {reply[4:]}"


# --- DATA -------------------------------------------------------------------------------------

_END = b"\r\n.\r\n"


class DataReader:
    """Collects DATA up to the end marker CRLF "." CRLF (RFC 5321 §4.1.1.4) and undoes
    dot-stuffing (§4.5.2). Only that exact marker ends the data: ``LF . LF`` and similar are
    content (normalised or refused as bare newlines), which is what defeats SMTP smuggling.

    Past ``max_bytes`` the content is discarded while reading continues to the end marker, so
    the reply comes after the data, as RFC 5321 §4.2.5 implies."""

    def __init__(self, max_bytes: int) -> None:
        # The CRLF that ended the DATA command line starts the first line, so an empty message
        # (".\r\n" right away) is found by the same search.
        self._buf = bytearray(b"\r\n")
        self._scan_from = 0
        self._received = 0
        self.max_bytes = max_bytes
        self.too_big = False
        self.done = False
        # Octets of the data as sent (dot-stuffed), known once done.
        self.size = 0

    def feed(self, chunk: bytes) -> bytes | None:
        """Add received bytes. Returns None until the end marker is seen, then the bytes that
        followed it (pipelined commands, to be read as commands)."""
        self._received += len(chunk)
        self._buf += chunk
        end = self._buf.find(_END, self._scan_from)
        if end < 0:
            self._scan_from = max(0, len(self._buf) - len(_END) + 1)
            if self._received > self.max_bytes:
                # Keep only what a split end marker could start with.
                self.too_big = True
                del self._buf[: -(len(_END) - 1)]
                self._scan_from = 0
            return None
        self.done = True
        leftover = bytes(self._buf[end + len(_END) :])
        del self._buf[end + 2 :]  # keep the final line's CRLF
        # The marker's first CRLF ends the last line; ".\r\n" is not content.
        self.size = self._received - len(leftover) - 3
        if self.size > self.max_bytes:
            self.too_big = True
        if self.too_big:
            self._buf = bytearray()
        return leftover

    def content(self, normalize_lf: bool = False) -> bytes:
        """The message with dot-stuffing removed (a line's leading "." is dropped). With
        ``normalize_lf`` a line ending in a bare LF is first made a CRLF line (Postfix 3.9
        ``smtpd_forbid_bare_newline = normalize``), so it is unstuffed like any other line; the
        end marker was still only CRLF "." CRLF, so nothing can be smuggled past it."""
        data = self._complete()
        return _unstuff(normalize_bare_lf(data) if normalize_lf else data)

    def message(self, normalize_lf: bool) -> bytes | None:
        """:meth:`content`, or None when a bare CR or LF is left in it (a bare CR always; a bare
        LF unless ``normalize_lf``). Counted once on the received octets, in C: unstuffing
        removes only a "." after a CRLF, which makes or breaks no line ending, so the verdict
        is the content's (:func:`has_bare_newline`)."""
        data = line_ends_checked(self._complete(), normalize_lf)
        return None if data is None else _unstuff(data)

    def _complete(self) -> bytearray:
        if not self.done or self.too_big:
            raise ValueError("no complete message within the size limit")
        return self._buf


_DOT_LINE = b"\r\n."


def _unstuff(data: bytes | bytearray) -> bytes:
    """RFC 5321 §4.5.2: drop the "." that starts a line, and the CRLF that ended the DATA
    command line (the buffer's first two octets). Most messages have no such line: then the
    only copy is the final one."""
    if data.find(_DOT_LINE) >= 0:
        data = data.replace(_DOT_LINE, b"\r\n")
    return bytes(memoryview(data)[2:])


# RFC 5322 §2.2, §3.6.8: a header field is a name of printable US-ASCII but ":" (optional WSP
# before the colon is obs-syntax, §4.5), then ":"; a line that starts with WSP continues the
# field before it. The run of such lines from the start is the well-formed header section.
_HEADER_FIELDS = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\r\n]*(?:\r\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\Z))*)*"
)


def with_header_section(content: bytes) -> bytes:
    """``content`` with a header section every reader agrees on, as Postfix's cleanup makes
    it: the section ends at the first line that is neither a header field nor the
    continuation of one, and when that line is not the empty line (RFC 5322 §2.1), an empty
    line goes before it, so all from there on is body.

    Without it, a first line that starts with a space would fold into the Received field we
    put on top, and the lines after it would become header fields that our checks never
    parsed: a forged From of a p=reject domain went through that way. One C-speed match over
    the header section; the content is copied only when it needs the empty line."""
    m = _HEADER_FIELDS.match(content)
    end = m.end() if m else 0
    if end == len(content) or content.startswith(b"\r\n", end):
        return content
    return content[:end] + b"\r\n" + content[end:]


def has_bare_newline(data: bytes | bytearray) -> bool:
    """True if a CR or LF appears other than as CRLF (RFC 5321 §2.3.8)."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def line_ends_checked(data: bytes | bytearray, normalize_lf: bool) -> bytes | bytearray | None:
    """``data`` when every CR and LF is part of a CRLF; with ``normalize_lf`` bare LFs are made
    CRLF (:func:`normalize_bare_lf`); None when a bare CR, or a bare LF not normalised, is
    left. Three counts of the whole message, and a copy only when LFs are normalised."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf:
        # Normalising adds no CR that is not part of a CRLF, nor takes one away.
        return None
    if data.count(b"\n") == crlf:
        return data
    return normalize_bare_lf(data) if normalize_lf else None
