"""The ``$`` search result variable (RFC 5182 SEARCHRES): what the last SEARCH ... RETURN (SAVE)
found, kept per session as UIDs of the mailbox selected at the time."""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from postmesh.imap_gw.state import SelectedMailbox


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
