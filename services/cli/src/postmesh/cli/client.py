"""One admin API over HTTP with the standard library: JSON in and out, a bearer token, and the
API's reason (``detail``) carried into the error an operator sees."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """The API answered with an error status; ``str()`` is its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Unreachable(Exception):
    pass


def segment(value: str) -> str:
    """A path segment: an address keeps its @, everything else is percent-encoded (UTF-8)."""
    return urllib.parse.quote(value, safe="@")


def _reason(raw: bytes) -> str:
    try:
        detail = json.loads(raw)["detail"]
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip()[:500]
    if isinstance(detail, list):  # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for e in detail:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
        return "; ".join(parts)
    return str(detail)


@dataclass(frozen=True)
class Api:
    base_url: str
    token: str
    timeout: float = 30.0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str | int | bool | None] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for 204); raises ApiError or Unreachable."""
        url = self.base_url.rstrip("/") + path
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items() if v not in (None, "")}  # fmt: skip
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                if not raw:
                    return None
                if "json" in resp.headers.get("Content-Type", ""):
                    return json.loads(raw)
                return raw.decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, _reason(e.read())) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach {self.base_url}: {reason}") from None
