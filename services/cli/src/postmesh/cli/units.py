"""Sizes and durations as operators type them: ``500M``, ``2GiB``, ``30d``, ``12h``."""

from __future__ import annotations

import argparse
import re

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(i?b)?\s*$", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def size(text: str) -> int:
    """Bytes; K, M, G, T, P are binary multiples (1K = 1024), as quotas are counted."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 0, 512M, 2G, 1TiB)")
    power = " kmgtp".index(m.group(2).lower() or " ")
    return int(m.group(1)) * int(1024**power)


def duration(text: str) -> float:
    """Seconds; a number with s, m, h, d or w (none: seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 12h, 30d)")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)
