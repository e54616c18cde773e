"""ADR 0051: SELECT's listing (ListMessageFlags) of a mailbox that has not changed is answered
from the listing cache; any change to the mailbox's messages is seen at the next listing."""

from __future__ import annotations

from pathlib import Path

from postmesh.store.contract_suite import message
from postmesh.store.flag_listing import ListingCache
from postmesh.store.model import INBOX, Delivery, FlagListing, FlagsMode
from postmesh.store.sqlite import SqliteStoreRepository


def cols(page: FlagListing | None) -> tuple[object, ...] | None:
    """A page's content, whatever sequence type holds its columns (the cache keeps arrays)."""
    if page is None:
        return None
    return (list(page.uids), list(page.modseqs), list(page.flag_index), page.flag_sets, page.more)


def flags_by_uid(page: FlagListing) -> dict[int, set[str]]:
    return {u: set(page.flag_sets[i]) for u, i in zip(page.uids, page.flag_index, strict=True)}


async def _selects(repo: SqliteStoreRepository) -> list[str]:
    """Start recording the message listings that reach SQLite (cache misses)."""
    seen: list[str] = []

    def trace(statement: str) -> None:
        if statement.lstrip().startswith("SELECT uid, modseq, flags FROM messages"):
            seen.append(statement)

    await repo.connection.run(lambda c: c.set_trace_callback(trace))
    return seen


async def test_unchanged_mailboxes_are_listed_once_and_changes_are_seen(tmp_path: Path) -> None:
    repo = SqliteStoreRepository(tmp_path / "store.sqlite3")
    await repo.open()
    try:
        for i in range(1, 6):
            await repo.deliver(Delivery(f"q{i}", "u", "", content=message(i)))
        listed = await _selects(repo)
        first = await repo.list_flags("u", INBOX, 0, 100)
        again = await repo.list_flags("u", INBOX, 0, 100)
        assert len(listed) == 1  # the second came from the cache...
        assert cols(again) == cols(first) and again is not first  # ...equal, and the caller's own
        assert list(first.uids) == [1, 2, 3, 4, 5]

        # A flag change (a new MODSEQ) is in the next listing.
        await repo.store_flags("u", INBOX, [2], FlagsMode.ADD, ["\\Seen", "$Work"])
        page = await repo.list_flags("u", INBOX, 0, 100)
        assert flags_by_uid(page)[2] == {"\\Seen", "$Work"}
        assert page.modseqs[1] > first.modseqs[1]
        # So are an expunge, an append, a move out and a move in.
        await repo.store_flags("u", INBOX, [3], FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge("u", INBOX)
        assert list((await repo.list_flags("u", INBOX, 0, 100)).uids) == [1, 2, 4, 5]
        await repo.deliver(Delivery("q6", "u", "", content=message(6)))
        assert list((await repo.list_flags("u", INBOX, 0, 100)).uids) == [1, 2, 4, 5, 6]
        await repo.move_messages("u", INBOX, [4], "Trash")
        assert list((await repo.list_flags("u", INBOX, 0, 100)).uids) == [1, 2, 5, 6]
        assert list((await repo.list_flags("u", "Trash", 0, 100)).uids) == [1]
        await repo.move_messages("u", "Trash", [1], INBOX)
        assert list((await repo.list_flags("u", INBOX, 0, 100)).uids) == [1, 2, 5, 6, 7]
        # A page is its own entry: a smaller page of the same state is listed, not cut.
        small = await repo.list_flags("u", INBOX, 0, 2)
        assert (list(small.uids), small.more) == ([1, 2], True)
        # A mailbox deleted and made again under its name is listed anew.
        await repo.delete_mailbox("u", "Trash")
        await repo.create_mailbox("u", "Trash")
        assert list((await repo.list_flags("u", "Trash", 0, 100)).uids) == []
    finally:
        await repo.close()


def test_the_cache_keeps_at_most_its_rows() -> None:
    cache = ListingCache(max_rows=5)
    pages = {k: FlagListing([1, 2], [3, 4], [0, 0], [("\\Seen",)]) for k in "abc"}
    for k, p in pages.items():
        cache.put(k, p)
    assert cache.get("a") is None  # the least recently used went
    assert cols(cache.get("b")) == cols(pages["b"]) and cols(cache.get("c")) == cols(pages["c"])
    cache.put("big", FlagListing(list(range(6)), list(range(6)), [0] * 6, [()]))
    assert cache.get("big") is None  # larger than the whole cache: not kept
    assert cols(cache.get("b")) == cols(pages["b"])
