"""The author of a message: the RFC 5322 From (or Sender) domain."""

from __future__ import annotations

import email.policy
import re
from email.headerregistry import Address
from email.parser import BytesHeaderParser

# The empty line that ends the header section; at the very start, the section is empty.
_END_OF_HEADERS = re.compile(rb"(?:\A|\r?\n)\r?\n")
_PARSER = BytesHeaderParser(policy=email.policy.default)


def header_section(message: bytes) -> bytes:
    """The header fields of a message, up to and including the empty line (or all of it)."""
    m = _END_OF_HEADERS.search(message)
    return message if m is None else message[: m.end()]


def _addresses(value: object) -> list[Address]:
    addresses = getattr(value, "addresses", None)
    return [a for a in addresses or () if isinstance(a, Address) and a.domain]


def author_domain(message: bytes) -> str | None:
    """Lower-cased domain of the RFC 5322 From author, or None when there is none.

    RFC 5322 section 3.6.2: a From with several mailboxes must come with a Sender naming the one
    who sent it, so that is the domain then; without a Sender, the first mailbox's. Only the first
    From field counts (a second one is a malformed message; DMARC, RFC 7489 section 6.6.1,
    rejects it, which is the verifier's business).
    """
    try:
        headers = _PARSER.parsebytes(header_section(message))
        authors = _addresses(headers.get("From"))
        if len(authors) > 1:
            sender = _addresses(headers.get("Sender"))
            if sender:
                return sender[0].domain.lower()
    except (ValueError, TypeError, IndexError, AttributeError):
        # The email package raises assorted errors on garbage header values.
        return None
    return authors[0].domain.lower() if authors else None
