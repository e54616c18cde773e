"""IMAP SEARCH (RFC 9051 §6.4.4) for the store: the per-message search document the backends
keep, and one evaluator of ``store_pb2.SearchKey`` that both backends call."""

from postmesh.store.search.document import (
    SearchDocument,
    build_search_document,
    decode_search_doc,
    encode_search_doc,
)
from postmesh.store.search.evaluate import (
    DocumentSource,
    SearchableMessage,
    SearchContext,
    compile_key,
    fold,
    matches,
    matching,
    needs_document,
    needs_headers,
    needs_text,
    search,
    uid_spans,
    validate,
)
from postmesh.store.search.plan import (
    HEADERS_VERSION,
    INDEXED_HEADERS,
    Limits,
    Plan,
    indexed_headers,
    plan,
)

__all__ = [
    "HEADERS_VERSION",
    "INDEXED_HEADERS",
    "DocumentSource",
    "Limits",
    "Plan",
    "SearchContext",
    "SearchDocument",
    "SearchableMessage",
    "build_search_document",
    "compile_key",
    "decode_search_doc",
    "encode_search_doc",
    "fold",
    "indexed_headers",
    "matches",
    "matching",
    "needs_document",
    "needs_headers",
    "needs_text",
    "plan",
    "search",
    "uid_spans",
    "validate",
]
