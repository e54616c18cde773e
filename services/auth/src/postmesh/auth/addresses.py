"""Validation and canonical form of domains and addresses (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531
internationalized local parts; IDNA domains)."""

from __future__ import annotations

import re
import unicodedata

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Dot-atom local part (RFC 5322 §3.2.3) without the rarely used quoted form; RFC 6531 §3.3 adds
# any non-ASCII UTF-8 character to atext.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u00a0-\U0010ffff"
_LOCAL = re.compile(rf"^[{_ATEXT}]+(\.[{_ATEXT}]+)*$")
# Control, format, separator, surrogate, private-use and unassigned characters never belong in
# an address, even where the pattern's non-ASCII range would let them through.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
MAX_ADDRESS_OCTETS = 254  # RFC 5321 §4.5.3.1.3 path (256) less the angle brackets


class InvalidAddress(ValueError):
    pass


def canonical_domain(name: str) -> str:
    """Lower-case, IDNA-encoded domain; raises InvalidAddress."""
    name = name.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise InvalidAddress(f"invalid domain name {name!r}") from e
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(lbl) for lbl in labels):
        raise InvalidAddress(f"invalid domain name {name!r}")
    return name


def _split(address: str) -> tuple[str, str]:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, sep, domain = address.rpartition("@")
    if not sep or not local:
        raise InvalidAddress(f"invalid address {address!r}: expected local-part@domain")
    # RFC 6532 §3.1: compare UTF-8 local parts in NFC.
    local = unicodedata.normalize("NFC", local)
    # Characters first: a lone surrogate (possible in JSON) must be refused before encoding.
    if not _LOCAL.match(local) or any(
        unicodedata.category(c) in _BAD_CATEGORIES for c in local if ord(c) > 127
    ):
        raise InvalidAddress(
            f"invalid address {address!r}: the local part must be a dot-atom"
            " (RFC 5321 §4.1.2; quoted local parts are not accepted)"
        )
    if len(local.encode()) > 64:
        raise InvalidAddress(f"invalid address {address!r}: local part over 64 octets")
    canonical = f"{local}@{canonical_domain(domain)}"
    if len(canonical.encode()) > MAX_ADDRESS_OCTETS:
        raise InvalidAddress(f"invalid address {address!r}: over {MAX_ADDRESS_OCTETS} octets")
    return local, canonical.rpartition("@")[2]


def unquoted_local_part(address: str) -> str | None:
    """``"john"@example.org`` -> ``john@example.org``: a quoted-string local part is the same
    mailbox as its content (RFC 5321 §4.1.2, RFC 5322 §3.4.1: quoted-pairs undone); None when
    the local part is not quoted."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, sep, domain = address.rpartition("@")
    if not sep or len(local) < 2 or not (local.startswith('"') and local.endswith('"')):
        return None
    return re.sub(r"\\(.)", r"\1", local[1:-1]) + "@" + domain


def canonical_address(address: str) -> str:
    """``Local@Domain`` -> ``local@domain``: the domain is case-insensitive, the local part is
    compared case-insensitively too (as Postfix and Dovecot do for virtual users)."""
    local, domain = _split(address)
    return f"{local.lower()}@{domain}"


def remote_address(address: str) -> str:
    """A validated address whose local part keeps its case: only its own host may interpret
    it (RFC 5321 §2.4), so a forward to another domain sends it as written."""
    local, domain = _split(address)
    return f"{local}@{domain}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]
