"""THREAD's two algorithms (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES (after Jamie
Zawinski's threading of Netscape Mail), and the thread list they answer with (§4). Pure
functions of :class:`~.sort_keys.Fields` in mailbox order; the caller maps UIDs to the numbers
it answers with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise

from postmesh.imap_gw.sort_keys import Fields, base_subject, casemap, message_ids, sent_date


@dataclass(eq=False)
class Node:
    """A thread member: a message, or a dummy standing for one that is referred to but not
    here (or, at the top, grouping messages of one subject)."""

    message: Fields | None = None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def descends_from(self, other: Node) -> bool:
        node: Node | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


def ordered_subject(messages: Sequence[Fields]) -> list[Node]:
    """ORDEREDSUBJECT: messages grouped by base subject, each group ordered by sent date (then
    mailbox order), its first message the parent of the others; threads ordered by the sent date
    of their first message."""
    order = {id(m): i for i, m in enumerate(messages)}
    keyed = sorted(
        messages,
        key=lambda m: (casemap(base_subject(m.subject)[0]), sent_date(m), order[id(m)]),
    )
    roots: list[Node] = []
    for _, group in groupby(keyed, key=lambda m: casemap(base_subject(m.subject)[0])):
        first, *rest = list(group)
        root = Node(first)
        for m in rest:
            root.adopt(Node(m))
        roots.append(root)
    roots.sort(key=lambda n: _date_key(n, order))
    return roots


def references(messages: Sequence[Fields]) -> list[Node]:
    """REFERENCES (RFC 5256 §3, steps 1-6)."""
    order = {id(m): i for i, m in enumerate(messages)}
    table: dict[str, Node] = {}
    every: list[Node] = []

    def container(msg_id: str) -> Node:
        node = table.get(msg_id)
        if node is None:
            node = table[msg_id] = Node()
            every.append(node)
        return node

    for m in messages:
        # (1)(A) The message's own container; a missing or repeated Message-ID gets one of
        # its own that nothing can refer to.
        own_ids = message_ids(m.message_id)
        own = table.get(own_ids[0]) if own_ids else None
        if own is None or own.message is not None:
            own = Node()
            every.append(own)
            if own_ids and own_ids[0] not in table:
                table[own_ids[0]] = own
        own.message = m
        # (1)(B) The references, linked in order, never changing a link that exists nor
        # making a loop.
        refs = message_ids(m.references) or message_ids(m.in_reply_to)[:1]
        chain = [container(r) for r in refs]
        for parent, child in pairwise(chain):
            if child.parent is None and parent is not child and not parent.descends_from(child):
                parent.adopt(child)
        # (1)(C) The message's parent is its last reference (or none), replacing any link
        # another message's References presumed for it.
        last = chain[-1] if chain else None
        if last is not None and (last is own or last.descends_from(own)):
            last = None
        if own.parent is not last:
            if own.parent is not None:
                own.parent.children.remove(own)
                own.parent = None
            if last is not None:
                last.adopt(own)
    # (2)-(4) The root set, with dummies pruned.
    roots = _prune([n for n in every if n.parent is None], top=True)
    # (5) Roots of one base subject brought together.
    roots = _by_subject(roots)
    # (6) Siblings by sent date, then mailbox order; a dummy by its first child.
    _sort_tree(roots, order)
    return roots


def _prune(roots: list[Node], top: bool) -> list[Node]:
    """RFC 5256 §3 step (4): a dummy without children goes; one with children gives them to
    its parent's level, except a dummy at the top with more than one child. Iterative, children
    before parents: a long reference chain is no recursion limit."""
    for node in reversed(_descendants(roots)):
        node.children = _pruned(node, node.children, top=False)
    return _pruned(None, roots, top=top)


def _pruned(parent: Node | None, nodes: list[Node], top: bool) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if node.message is not None or (top and len(node.children) > 1):
            out.append(node)
            continue
        for c in node.children:  # nothing, or promoted
            c.parent = parent
        out += node.children
    return out


def _descendants(roots: list[Node]) -> list[Node]:
    """Every node below ``roots`` and the roots, parents before their children."""
    out = list(roots)
    i = 0
    while i < len(out):
        out += out[i].children
        i += 1
    return out


def _subject_of(node: Node) -> tuple[str, bool]:
    """(collation key of the base subject, is a reply or forward) of a root: its message's, or
    a dummy's first child's."""
    m = node.message if node.message is not None else node.children[0].message
    if m is None:
        return "", False
    subject, marked = base_subject(m.subject)
    return casemap(subject), marked


def _by_subject(roots: list[Node]) -> list[Node]:
    """RFC 5256 §3 step (5)."""
    table: dict[str, Node] = {}
    for node in roots:  # (5)(B)
        subject, marked = _subject_of(node)
        if not subject:
            continue
        held = table.get(subject)
        if (
            held is None
            or (node.message is None and held.message is not None)
            or (_subject_of(held)[1] and not marked)
        ):
            table[subject] = node
    out = list(roots)
    for node in roots:  # (5)(C)
        subject, marked = _subject_of(node)
        held = table.get(subject) if subject else None
        if held is None or held is node:
            continue
        out.remove(node)
        if held.message is None and node.message is None:
            for c in list(node.children):
                held.adopt(c)
        elif held.message is None:
            held.adopt(node)
        elif node.message is None:
            # The dummy takes the message, and the table's place.
            node.adopt(held)
            out[out.index(held)] = node
            table[subject] = node
        elif marked and not _subject_of(held)[1]:
            held.adopt(node)
        else:
            dummy = Node()
            out[out.index(held)] = dummy
            dummy.adopt(held)
            dummy.adopt(node)
            table[subject] = dummy
    return out


def _date_key(node: Node, order: dict[int, int]) -> tuple[int, int]:
    m = node.message if node.message is not None else node.children[0].message
    assert m is not None
    return sent_date(m), order[id(m)]


def _sort_tree(roots: list[Node], order: dict[int, int]) -> None:
    """Children before parents: a dummy sorts by its first child once that is known."""
    for node in reversed(_descendants(roots)):
        node.children.sort(key=lambda n: _date_key(n, order))
    roots.sort(key=lambda n: _date_key(n, order))


def render(roots: Sequence[Node], number: Callable[[Fields], int]) -> bytes:
    """The thread list (RFC 5256 §4): ``(3 6 (4 23)(44 7 96))``: a member followed by one
    child continues the list; several children are each a parenthesised list. Iterative, like
    the rest."""
    out = bytearray()
    stack: list[Node | bytes] = []
    for root in reversed(roots):
        stack += [b")", root, b"("]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        if item.message is not None:
            out += b"%d" % number(item.message)
            if item.children:
                out += b" "
        if len(item.children) == 1:
            stack.append(item.children[0])
        else:
            for c in reversed(item.children):
                stack += [b")", c, b"("]
    return bytes(out)
