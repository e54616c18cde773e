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
from postmesh.store.mime import header_index, search_text

_VERSION = 1
# Fast compression: this runs on every delivery; decoded mail text still shrinks 3-4 times.
_ZLIB_LEVEL = 1
# A decoded document is at most ~1.3 MiB of JSON; refuse to inflate anything much larger
# (a corrupt or hostile value must not become a decompression bomb).
_MAX_INFLATED = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SearchDocument:
    """Decoded header values by lower-case field name (see ``mime.header_index``) and the
    decoded body text (see ``mime.search_text``)."""

    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    text: str = ""


def build_search_document(raw: bytes, meta: store_pb2.MessageMeta) -> SearchDocument:
    """The search document of a raw message and the meta ``extract_meta`` made of it."""
    return SearchDocument(headers=header_index(meta), text=search_text(raw, meta))


def encode_search_doc(doc: SearchDocument) -> bytes:
    """zlib-compressed JSON ``{"v": 1, "h": [[name, [values...]], ...], "t": text}``."""
    payload = {
        "v": _VERSION,
        "h": [[name, list(values)] for name, values in doc.headers.items()],
        "t": doc.text,
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )
    return zlib.compress(data, _ZLIB_LEVEL)


def decode_search_doc(data: bytes) -> SearchDocument:
    """The inverse of ``encode_search_doc``; ValueError for anything it did not produce."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, _MAX_INFLATED)
        if inflater.unconsumed_tail:
            raise ValueError("search document too large")
        payload = json.loads(raw.decode("utf-8", "surrogatepass"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt search document: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("v") != _VERSION:
        raise ValueError("unknown search document version")
    headers: dict[str, list[str]] = {}
    items = payload.get("h")
    text = payload.get("t")
    if not isinstance(items, list) or not isinstance(text, str):
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
    return SearchDocument(headers=headers, text=text)
