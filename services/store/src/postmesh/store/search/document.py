"""The per-message search data a backend stores: decoded headers and body text, as one opaque
binary value.

One blob because FerretDB cannot store nested arrays or field names with dots (header names
may contain dots), and because SEARCH loads it whole or not at all.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from postmesh.api.store.v1 import store_pb2
from postmesh.store.mime import header_index, part_headers_text, search_text

# Version 2 (ADR 0061): the JSON head, one LF, then the text as UTF-8, not a JSON string: JSON
# escaping 100 KiB of text on every delivery cost ~0.2 ms of the store's CPU, and as much to
# parse it back at each SEARCH. JSON never holds a raw LF (it escapes one in a string), so the
# first LF ends the head. Version 1 (the text inside the JSON) is still read.
_VERSION = 2
_V1 = 1
# Fast compression: this runs on every delivery; decoded mail text still shrinks 3-4 times.
_ZLIB_LEVEL = 1
# A decoded document is at most ~1.3 MiB of JSON; refuse to inflate anything much larger
# (a corrupt or hostile value must not become a decompression bomb).
_MAX_INFLATED = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SearchDocument:
    """Decoded header values by lower-case field name (see ``mime.header_index``), the
    decoded body text (see ``mime.search_text``) and the body parts' MIME headers, which only
    TEXT searches (``mime.part_headers_text``; empty in documents made before them)."""

    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    text: str = ""
    part_headers: str = ""


def build_search_document(raw: bytes, meta: store_pb2.MessageMeta) -> SearchDocument:
    """The search document of a raw message and the meta ``extract_meta`` made of it."""
    return SearchDocument(
        headers=header_index(meta),
        text=search_text(raw, meta),
        part_headers=part_headers_text(raw, meta),
    )


def encode_search_doc(doc: SearchDocument) -> bytes:
    """zlib-compressed ``{"v": 2, "h": [[name, [values...]], ...], "p": part headers}`` JSON,
    LF, the text ("p" only when there are part headers)."""
    head: dict[str, object] = {
        "v": _VERSION,
        "h": [[name, list(values)] for name, values in doc.headers.items()],
    }
    if doc.part_headers:
        head["p"] = doc.part_headers
    data = b"%b\n%b" % (
        json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        ),
        doc.text.encode("utf-8", "surrogatepass"),
    )
    return zlib.compress(data, _ZLIB_LEVEL)


def decode_search_doc(data: bytes) -> SearchDocument:
    """The inverse of ``encode_search_doc`` (version 1 too); ValueError for anything it did
    not produce."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, _MAX_INFLATED)
        if inflater.unconsumed_tail:
            raise ValueError("search document too large")
        head, lf, body = raw.partition(b"\n")
        payload = json.loads(head.decode("utf-8", "surrogatepass"))
        if not isinstance(payload, dict):
            raise ValueError("malformed search document")
        version = payload.get("v")
        if lf and version == _VERSION:
            text: object = body.decode("utf-8", "surrogatepass")
        elif not lf and version == _V1:
            text = payload.get("t")
        else:
            raise ValueError("unknown search document version")
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt search document: {exc}") from exc
    headers: dict[str, list[str]] = {}
    items = payload.get("h")
    part_headers = payload.get("p", "")
    if (
        not isinstance(items, list)
        or not isinstance(text, str)
        or not isinstance(part_headers, str)
    ):
        raise ValueError("malformed search document")
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], list)
            or not all(isinstance(v, str) for v in item[1])
        ):
            raise ValueError("malformed search document header entry")
        headers[item[0]] = item[1]
    return SearchDocument(headers=headers, text=text, part_headers=part_headers)
