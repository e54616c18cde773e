"""Validation errors of the admin REST APIs, made safe to send back.

FastAPI's default 422 echoes each rejected ``input`` and renders the body as UTF-8 JSON: a lone
surrogate (``"\\ud800"`` is legal JSON, RFC 8259 §8.2) then turns the 422 into a 500, and a
rejected password would be echoed to the client and to any log of responses. What is sent
instead: each error's type, location and message, with every string made encodable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _safe(str(value))


def safe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{"type", "loc", "msg"}, ...]`` without the rejected input or its context."""
    return [
        {
            "type": _safe(e.get("type", "")),
            "loc": _safe(e.get("loc", ())),
            "msg": _safe(e.get("msg", "")),
        }
        for e in errors
    ]
