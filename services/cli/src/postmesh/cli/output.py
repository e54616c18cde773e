"""What a command prints: JSON as the API sent it (``--json``), or a table for people."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TextIO

# A column: its header, and the field or a function of the row that gives its cell.
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("\n", " ")


def _width(text: str) -> int:
    """Terminal columns: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], out: TextIO) -> None:
    cells = [
        [_cell(row.get(key) if isinstance(key, str) else key(row)) for _, key in columns]
        for row in rows
    ]
    headers = [h for h, _ in columns]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        out.write("  ".join(_pad(c, w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def record(row: dict[str, Any], out: TextIO) -> None:
    """One object as ``field  value`` lines."""
    width = max((_width(k) for k in row), default=0)
    for key, value in row.items():
        out.write(f"{_pad(key, width)}  {_cell(value)}\n")


def emit(
    data: Any, as_json: bool, columns: Sequence[Column] | None = None, out: TextIO | None = None
) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif isinstance(data, list):
        table(data, columns or [(k, k) for k in (data[0] if data else {})], out)
    elif isinstance(data, dict):
        record(data, out)
    elif data is not None:
        out.write(f"{data}\n")


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB" (binary units, as the quota is counted)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
