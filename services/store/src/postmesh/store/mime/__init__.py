"""What IMAP needs from a message, computed once at delivery so FETCH and SEARCH never
re-parse it: ENVELOPE and BODYSTRUCTURE with part offsets (``extract_meta``), and the decoded
header values, body text and sent date SEARCH matches against."""

from postmesh.store.mime.addresses import Address, parse_addresses
from postmesh.store.mime.headers import decode_words
from postmesh.store.mime.structure import MAX_DEPTH, MAX_PARTS, extract_meta
from postmesh.store.mime.text import (
    MAX_TEXT_CHARS,
    header_index,
    part_headers_text,
    search_text,
    sent_date,
    sent_day,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "MAX_TEXT_CHARS",
    "Address",
    "decode_words",
    "extract_meta",
    "header_index",
    "parse_addresses",
    "part_headers_text",
    "search_text",
    "sent_date",
    "sent_day",
]
