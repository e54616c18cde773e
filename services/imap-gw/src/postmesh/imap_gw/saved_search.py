"""The ``$`` search result variable (RFC 5182 SEARCHRES): what the last SEARCH ... RETURN (SAVE)
found, kept per session as UIDs of the mailbox selected at the time."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterable
from typing import TypeVar

from postmesh.imap_gw.parser.base import Command
from postmesh.imap_gw.parser.sequence import SequenceSet
from postmesh.imap_gw.state import SelectedMailbox

C = TypeVar("C", bound=Command)


class SavedSearch:
    """UIDs saved in one selected mailbox. Selecting a mailbox (again) empties ``$`` (RFC 5182
    §2.1): the value belongs to the SelectedMailbox object it was saved in, so a new SELECT,
    EXAMINE, CLOSE or UNSELECT makes it empty without any hook. Expunged messages drop out as
    the selected mailbox forgets them (§2.1: "removed from the list")."""

    __slots__ = ("_mailbox", "_uids")

    def __init__(self) -> None:
        self._mailbox: weakref.ref[SelectedMailbox] | None = None
        self._uids: tuple[int, ...] = ()

    def save(self, selected: SelectedMailbox, uids: Iterable[int]) -> None:
        self._mailbox = weakref.ref(selected)
        self._uids = tuple(uids)

    def clear(self) -> None:
        self._mailbox = None
        self._uids = ()

    def uids(self, selected: SelectedMailbox | None) -> list[int]:
        """The saved UIDs still in ``selected``, ascending; empty if saved elsewhere."""
        if selected is None or self._mailbox is None or self._mailbox() is not selected:
            return []
        return [u for u in self._uids if selected.seq_of(u) is not None]

    def expand(self, selected: SelectedMailbox | None, *, uid: bool) -> SequenceSet:
        """``$`` as the UIDs (``uid``) or the message sequence numbers it stands for now. An
        empty ``$`` is an empty set: it names no message and is not an error (RFC 5182 §2.1)."""
        uids = self.uids(selected)
        if uid or selected is None:
            return SequenceSet(tuple(runs(uids)))
        seqs = [s for s in (selected.seq_of(u) for u in uids) if s is not None]
        return SequenceSet(tuple(runs(seqs)))

    def expand_in(self, cmd: C, selected: SelectedMailbox | None) -> C:
        """``cmd`` with every ``$`` sequence-set field (FETCH, STORE, UID EXPUNGE, COPY, MOVE:
        RFC 5182 §2.1) replaced by what it stands for. A set is one of UIDs under the UID
        form of a command (``uid`` true) and in a field named ``uids`` (UID EXPUNGE)."""
        changes: dict[str, SequenceSet] = {}
        for f in dataclasses.fields(cmd):
            value = getattr(cmd, f.name)
            if isinstance(value, SequenceSet) and value.saved:
                uid = bool(getattr(cmd, "uid", False)) or f.name == "uids"
                changes[f.name] = self.expand(selected, uid=uid)
        return dataclasses.replace(cmd, **changes) if changes else cmd  # type: ignore[arg-type]


def runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive ascending integers as (first, last)."""
    out: list[tuple[int, int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out
