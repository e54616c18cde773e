"""flag_listing.fold: rows into columns, each distinct flag set decoded once, pages bounded."""

from __future__ import annotations

from postmesh.store import flag_listing


def test_fold_shares_flag_sets_and_decodes_each_once() -> None:
    decoded: list[str] = []

    def decode(stored: str) -> tuple[str, ...]:
        decoded.append(stored)
        return tuple(stored.split()) if stored else ()

    rows = [(1, 5, "\\Seen"), (2, 6, ""), (4, 9, "\\Seen"), (7, 7, "\\Seen $X"), (8, 8, "")]
    page = flag_listing.fold(rows, 10, decode)
    assert (page.uids, page.modseqs, page.more) == ([1, 2, 4, 7, 8], [5, 6, 9, 7, 8], False)
    assert page.flag_sets == [("\\Seen",), (), ("\\Seen", "$X")]
    assert page.flag_index == [0, 1, 0, 2, 1]
    assert decoded == ["\\Seen", "", "\\Seen $X"]


def test_fold_stops_at_the_limit_with_more() -> None:
    rows = [(u, u, ()) for u in range(1, 5)]  # limit + 1 rows: others follow
    page = flag_listing.fold(rows, 3, tuple)
    assert (page.uids, page.more) == ([1, 2, 3], True)
    assert flag_listing.fold(rows[:3], 3, tuple).more is False


def test_fold_ends_a_page_before_its_flag_sets_grow_too_large() -> None:
    # Every message with a long keyword of its own: the page ends before the sets pass the
    # bound (and the next page goes on from the last UID), but never empty.
    word = "k" * 100_000
    rows = [(u, u, (f"{word}{u}",)) for u in range(1, 30)]
    page = flag_listing.fold(rows, 1000, tuple)
    assert page.more and 0 < len(page.uids) < 29
    assert sum(len(f[0]) + 1 for f in page.flag_sets) <= flag_listing.MAX_FLAG_SET_CHARS
    huge = [(1, 1, ("x" * (flag_listing.MAX_FLAG_SET_CHARS + 1),))]
    assert flag_listing.fold(huge, 10, tuple).uids == [1]
