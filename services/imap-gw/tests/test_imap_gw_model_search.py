"""SEARCH answered from the selected-mailbox model (``model_search.py``) gives the store's
answer: random flag/UID criteria over a random mailbox, with messages expunged in the store and
new ones not yet announced, compared with the store's own evaluator (``postmesh.store.search``)
over what the store holds."""

from __future__ import annotations

import random
from array import array

from postmesh.imap_gw import model_search
from postmesh.imap_gw.backend import Changes, FlagPage, MessageMeta
from postmesh.imap_gw.parser.search import (
    All,
    And,
    Body,
    Flag,
    ModSeq,
    Not,
    Or,
    Recent,
    SearchKey,
    Seq,
    Uid,
)
from postmesh.imap_gw.parser.sequence import STAR, SequenceSet
from postmesh.imap_gw.search_proto import to_proto
from postmesh.imap_gw.state import SelectedMailbox
from postmesh.store import search as store_search

_FLAGS = ["\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "$Work", "Later"]
# How clients may spell them: flags are atoms, compared without regard to case.
_ASKED = [*_FLAGS, "\\SEEN", "$work", "LATER", "\\Draft", "never"]


def _key(rng: random.Random, top_uid: int, depth: int = 0) -> SearchKey:
    choice = rng.randrange(8 if depth < 4 else 4)
    if choice == 0:
        return All()
    if choice == 1:
        return Recent()
    if choice == 2:
        return Flag(rng.choice(_ASKED), rng.random() < 0.5)
    if choice == 3:
        ranges = []
        for _ in range(rng.randint(1, 4)):
            a = STAR if rng.random() < 0.15 else rng.randint(1, top_uid + 3)
            b = STAR if rng.random() < 0.15 else rng.randint(1, top_uid + 3)
            ranges.append((a, b))
        return Uid(SequenceSet(tuple(ranges)))
    if choice == 4:
        return Not(_key(rng, top_uid, depth + 1))
    if choice == 5:
        return Or(_key(rng, top_uid, depth + 1), _key(rng, top_uid, depth + 1))
    return And(tuple(_key(rng, top_uid, depth + 1) for _ in range(rng.randint(1, 3))))


def _mailbox(rng: random.Random) -> tuple[SelectedMailbox, dict[int, tuple[str, ...]]]:
    """A model loaded at SELECT, then told of changes: the store's messages by UID."""
    store: dict[int, tuple[str, ...]] = {}
    uid = 0
    for _ in range(rng.randint(0, 60)):
        uid += rng.randint(1, 3)
        store[uid] = tuple(f for f in _FLAGS if rng.random() < 0.3)
    sets = sorted(set(store.values()))
    sel = SelectedMailbox("INBOX", 1, readonly=False, highestmodseq=10)
    sel.load(
        FlagPage(
            array("I", store),
            array("Q", [5] * len(store)),
            array("I", [sets.index(f) for f in store.values()]),
            sets,
            False,
        )
    )
    # Meanwhile, in other sessions: some expunged, some flags changed, some new messages.
    gone = [u for u in store if rng.random() < 0.15]
    changed = []
    for u in store:
        if u not in gone and rng.random() < 0.2:
            store[u] = tuple(f for f in _FLAGS if rng.random() < 0.5)
            changed.append(MessageMeta(u, store[u], 100, 0, 11))
    for u in gone:
        del store[u]
    for _ in range(rng.randint(0, 3)):
        uid += 1
        store[uid] = ("\\Seen",) if rng.random() < 0.5 else ()
        changed.append(MessageMeta(uid, store[uid], 100, 0, 11))
    sel.apply_changes(Changes(changed, gone, 11))
    return sel, store


def test_model_answers_as_the_store_does() -> None:
    rng = random.Random(9051)
    for _ in range(400):
        sel, store = _mailbox(rng)
        if not sel.uids:
            continue
        key = _key(rng, max(store, default=0))
        assert model_search.answerable(key)
        uids, seqs = model_search.search(sel, key)
        # What commands/search.py asks the store: the criteria within the client's view.
        view = Uid(SequenceSet(((1, sel.uids[-1]),)))
        msgs = [store_search.SearchableMessage(u, f, 0, 100, 11) for u, f in store.items()]
        ctx = store_search.SearchContext(max_uid=max(store, default=0))
        expected = store_search.search(to_proto(And((view, key))), msgs, ctx)
        expected = [u for u in expected if sel.seq_of(u) is not None]
        assert uids == expected, key
        assert seqs == [sel.seq_of(u) for u in expected]


def test_only_flag_and_uid_criteria_are_answered_from_the_model() -> None:
    seen = Flag("\\Seen", False)
    assert model_search.answerable(And((Uid(SequenceSet(((1, STAR),))), Not(seen))))
    assert not model_search.answerable(Or(seen, Body("x")))
    assert not model_search.answerable(And((seen, ModSeq(3))))
    assert not model_search.answerable(Seq(SequenceSet(((1, 2),))))  # resolved first
    assert not model_search.answerable(Uid(SequenceSet((), saved=True)))


def test_star_is_the_highest_uid_the_store_holds() -> None:
    """``*`` in a UID set is the store's highest UID (RFC 9051 §6.4.8), which is neither an
    expunged message the client still sees nor always one the client has been told of."""
    sel = SelectedMailbox("INBOX", 1, readonly=False, highestmodseq=10)
    sel.load(FlagPage(array("I", [1, 2, 3, 4, 5]), array("Q", [5] * 5), [0] * 5, [()], False))
    star = Uid(SequenceSet(((STAR, STAR),)))
    assert model_search.search(sel, star) == ([5], [5])
    sel.apply_changes(Changes([], [5], 11))  # expunged elsewhere, not yet reported
    assert model_search.search(sel, star) == ([4], [4])
    assert model_search.search(sel, Uid(SequenceSet(((3, STAR),)))) == ([3, 4], [3, 4])
    assert model_search.search(sel, Uid(SequenceSet(((9, STAR),)))) == ([4], [4])
    sel.apply_changes(Changes([MessageMeta(6, (), 100, 0, 12)], [], 12))  # not yet announced
    assert model_search.search(sel, star) == ([], [])
    assert model_search.search(sel, Uid(SequenceSet(((3, STAR),)))) == ([3, 4], [3, 4])
