"""Figures the bench parts print."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def side_by_side(round_: int, ours: Callable[[], T], theirs: Callable[[], T]) -> tuple[T, T]:
    """One round of a side-by-side case: (ours, theirs), the one going first alternating from
    round to round (ours first in round 0), so neither always runs on a machine the other has
    just warmed or loaded."""
    if round_ % 2:
        b = theirs()
        return ours(), b
    a = ours()
    return a, theirs()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratios(pairs: list[tuple[float, float]]) -> str:
    """Each round's ratio of a side-by-side figure (ours, theirs) and their median: the
    reference's own figure moves by up to 1.7x between runs minutes apart on these machines,
    so a ratio is read within its round, and the rounds alternate which side goes first."""
    each = [a / b for a, b in pairs]
    return f"median {median(each):.2f}x (rounds: {', '.join(f'{r:.2f}x' for r in each)})"


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
