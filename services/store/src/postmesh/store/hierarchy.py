"""Mailbox-name hierarchy arithmetic ("/" delimiter), shared by both backends."""

from __future__ import annotations

from collections.abc import Iterable

from postmesh.store.model import INBOX
from postmesh.store.validation import HIERARCHY_SEPARATOR as SEP

# RFC 6154 section 2 / RFC 9051 section 5.1: what ProvisionUser creates, in this order.
DEFAULT_MAILBOXES: tuple[tuple[str, str], ...] = (
    (INBOX, ""),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


def parents(name: str) -> list[str]:
    """The superior names of ``name``, outermost first ("a/b/c" -> ["a", "a/b"])."""
    parts = name.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts))]


def is_inferior(name: str, of: str) -> bool:
    """Is ``name`` strictly below ``of`` in the hierarchy?"""
    return name.startswith(of + SEP)


def child_range(name: str) -> tuple[str, str]:
    """Bounds [low, high) of the names strictly below ``name`` in binary (UTF-8 / code point)
    order: every inferior starts with name + "/" and "0" is the code point after "/"."""
    return name + SEP, name + "0"


def renamed(name: str, old: str, new: str) -> str:
    """``name`` (``old`` itself or an inferior of it) after renaming ``old`` to ``new``."""
    return new + name[len(old) :]


def has_children(name: str, names: Iterable[str]) -> bool:
    return any(is_inferior(n, name) for n in names)
