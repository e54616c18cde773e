"""The MongoDB backend's pending-MODSEQ marks (pure functions; the backend itself is tested on
FerretDB in tests/integration/test_store_contract.py)."""

from __future__ import annotations

from postmesh.store.mongodb import watermark

NOW = 1_000_000.0


def doc(**pending: dict[str, float]) -> dict[str, object]:
    return {"uidnext": 10, "highestmodseq": 50, "pending": pending}


def test_without_marks_the_counters_are_visible() -> None:
    assert watermark.visible({"uidnext": 10, "highestmodseq": 50}, NOW) == (10, 50)
    assert watermark.visible(doc(), NOW) == (10, 50)


def test_a_live_mark_holds_back_its_modseq_and_uid() -> None:
    d = doc(a=watermark.mark(48, 8, NOW - 1), b=watermark.mark(49, 9, NOW))
    assert watermark.visible(d, NOW) == (8, 47)


def test_a_stale_mark_is_ignored_and_listed_for_removal() -> None:
    old = NOW - watermark.STALE_SECONDS - 1
    d = doc(dead=watermark.mark(40, 5, old), live=watermark.mark(49, 9, NOW))
    assert watermark.visible(d, NOW) == (9, 48)
    assert watermark.stale_keys(d, NOW) == ["dead"]


def test_counters_forget_the_least_recently_used() -> None:
    c = watermark.Counters(size=2)
    c.put("a", (1, 1))
    c.put("b", (2, 2))
    assert c.get("a") == (1, 1)  # a is now the most recent
    c.put("c", (3, 3))
    assert (c.get("a"), c.get("b"), c.get("c")) == ((1, 1), None, (3, 3))
