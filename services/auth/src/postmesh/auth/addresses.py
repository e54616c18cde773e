"""Validation and canonical form of domains and addresses (RFC 5321 §4.1.2, §4.5.3.1)."""

from __future__ import annotations

import re

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Dot-atom local part (RFC 5322 §3.2.3) without the rarely used quoted form.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


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


def canonical_address(address: str) -> str:
    """``Local@Domain`` -> ``Local@domain``: the domain is case-insensitive, the local part is
    compared case-insensitively too (as Postfix and Dovecot do for virtual users)."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, sep, domain = address.rpartition("@")
    if not sep or not local or len(local) > 64 or not _LOCAL.match(local):
        raise InvalidAddress(f"invalid address {address!r}")
    return f"{local.lower()}@{canonical_domain(domain)}"
