"""The queue/lock repository contract, written once and run against every backend.

A test module subclasses :class:`QueueContract` and provides an async ``open_repo`` fixture: a
callable ``await open_repo(clock)`` returning an opened :class:`QueueRepository` on the test's
(shared, initially empty) storage. Every call gives a separate instance with its own connection,
as separate store replicas have. It lives in the package so that the unit tests (SQLite) and
tests/integration (FerretDB) import it by module name; register it for assertion rewriting with
``pytest.register_assert_rewrite("postmesh.store.queue.contract_suite")``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from postmesh.store.errors import InvalidArgument, NotFound
from postmesh.store.queue.model import LeaseNotHeld, NewEntry, QueueEntry
from postmesh.store.queue.repository import QueueRepository

T0 = 1_800_000_000.0  # a fixed start (seconds) so expectations are exact
BLOB = hashlib.sha256(b"message").hexdigest()


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    @property
    def ms(self) -> int:
        return int(self.t * 1000)


OpenRepo = Callable[[FakeClock], Awaitable[QueueRepository]]


def entry(qid: str = "Q1", rcpt: str = "bob@example.net", **kw: object) -> NewEntry:
    values: dict[str, object] = {"envelope": b"env:" + qid.encode(), "blob_id": BLOB}
    values.update(kw)
    return NewEntry(qid, rcpt, **values)  # type: ignore[arg-type]


class QueueContract:
    """Behaviour every QueueRepository backend must show. Subclasses provide ``open_repo``."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def repo(self, open_repo: OpenRepo, clock: FakeClock) -> QueueRepository:
        return await open_repo(clock)

    # -- enqueue -------------------------------------------------------------------------------

    async def test_enqueue_stores_and_is_idempotent(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        new = entry(attempts=1, next_attempt_at_ms=clock.ms + 60_000, last_error="451 busy")
        stored, dup = await repo.enqueue(new)
        assert not dup
        assert stored == QueueEntry(
            "Q1", "bob@example.net", b"env:Q1", BLOB, 1, clock.ms + 60_000, "451 busy",
            "", 0, clock.ms,
        )  # fmt: skip
        assert await repo.get("Q1", "bob@example.net") == stored
        clock.advance(5)
        again, dup = await repo.enqueue(entry(attempts=7, envelope=b"other", last_error="x"))
        assert dup and again == stored  # the stored entry, unchanged
        other, dup = await repo.enqueue(entry(rcpt="carol@example.net"))
        assert not dup and other.recipient == "carol@example.net"
        assert await repo.get("Q1", "nobody@example.net") is None

    async def test_concurrent_enqueues_make_one_entry(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        repos = [await open_repo(clock) for _ in range(4)]
        results = await asyncio.gather(*(r.enqueue(entry()) for r in repos for _ in range(3)))
        assert sum(not dup for _, dup in results) == 1
        assert len({e for e, _ in results}) == 1
        page, token = await repos[0].list_entries("", "", 100)
        assert len(page) == 1 and token == ""

    async def test_enqueue_validates(self, repo: QueueRepository) -> None:
        for bad in (
            entry(qid=""),
            entry(rcpt=""),
            entry(rcpt="a\r\nb@example.net"),
            entry(blob_id="not-a-sha"),
            entry(envelope=b""),
            entry(attempts=-1),
        ):
            with pytest.raises(InvalidArgument):
                await repo.enqueue(bad)

    async def test_enqueue_born_leased_is_the_callers_until_expiry(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        """An entry enqueued with a lease is held exactly as if its caller had claimed it."""
        stored, dup = await repo.enqueue(entry(lease_owner="a", lease_seconds=60))
        assert not dup
        assert (stored.lease_owner, stored.lease_expires_at_ms) == ("a", clock.ms + 60_000)
        assert stored.next_attempt_at_ms == clock.ms and stored.attempts == 0
        await repo.enqueue(entry("Q2", lease_owner="a", lease_seconds=60))
        assert await repo.claim_due("b", 10, 60) == []
        with pytest.raises(LeaseNotHeld):
            await repo.claim("Q1", "bob@example.net", "b", 60)
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q1", "bob@example.net", "b")
        s = await repo.stats()
        assert (s.entries, s.due, s.leased) == (2, 0, 2)
        await repo.delete("Q1", "bob@example.net", "a")  # the holder finishes at once
        assert await repo.get("Q1", "bob@example.net") is None
        clock.advance(61)  # the holder of Q2 died: anyone may take it now
        (taken,) = await repo.claim_due("b", 10, 60)
        assert (taken.queue_id, taken.lease_owner) == ("Q2", "b")
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q2", "bob@example.net", "a")
        with pytest.raises(LeaseNotHeld):
            await repo.reschedule("Q2", "bob@example.net", "a", clock.ms, "late")
        await repo.delete("Q2", "bob@example.net", "b")

    async def test_born_leased_holder_reschedules_like_a_claimer(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.enqueue(entry(lease_owner="a", lease_seconds=60))
        after = await repo.reschedule("Q1", "bob@example.net", "a", clock.ms + 5000, "451 later")
        assert (after.attempts, after.lease_owner, after.lease_expires_at_ms) == (1, "", 0)
        assert await repo.claim_due("b", 10, 60) == []
        clock.advance(5)
        (again,) = await repo.claim_due("b", 10, 60)
        assert (again.attempts, again.lease_owner) == (1, "b")

    async def test_duplicate_enqueue_never_changes_the_lease(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        free, _ = await repo.enqueue(entry())
        again, dup = await repo.enqueue(entry(lease_owner="a", lease_seconds=60))
        assert dup and again == free and again.lease_owner == ""
        held, _ = await repo.enqueue(entry("Q2", lease_owner="a", lease_seconds=60))
        other, dup = await repo.enqueue(entry("Q2", lease_owner="b", lease_seconds=60))
        assert dup and other == held and other.lease_owner == "a"
        (claimed,) = await repo.claim_due("b", 10, 60)
        assert claimed.queue_id == "Q1"

    async def test_concurrent_born_leased_enqueues_have_one_holder(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        """A bus record delivered twice to two replicas at once: one entry, one lease."""
        repos = [await open_repo(clock) for _ in range(4)]
        results = await asyncio.gather(
            *(
                r.enqueue(entry(lease_owner=f"r{n}-{k}", lease_seconds=60))
                for n, r in enumerate(repos)
                for k in range(2)
            )
        )
        firsts = [e for e, dup in results if not dup]
        assert len(firsts) == 1
        assert {e.lease_owner for e, _ in results} == {firsts[0].lease_owner}
        assert await repos[0].claim_due("other", 10, 60) == []

    async def test_enqueue_lease_validates(self, repo: QueueRepository) -> None:
        for bad in (
            entry(lease_owner="a"),
            entry(lease_seconds=60),
            entry(lease_owner="a", lease_seconds=86_401),
            entry(lease_owner="a\r\n", lease_seconds=60),
        ):
            with pytest.raises(InvalidArgument):
                await repo.enqueue(bad)
        assert await repo.get("Q1", "bob@example.net") is None

    # -- claims --------------------------------------------------------------------------------

    async def test_claim_takes_due_entries_oldest_first(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.enqueue(entry("Q3", next_attempt_at_ms=clock.ms - 1000))
        await repo.enqueue(entry("Q1", next_attempt_at_ms=clock.ms - 3000))
        await repo.enqueue(entry("Q2", next_attempt_at_ms=clock.ms - 2000))
        await repo.enqueue(entry("Q4", next_attempt_at_ms=clock.ms + 60_000))  # not yet due
        got = await repo.claim_due("replica-a", 2, 30)
        assert [e.queue_id for e in got] == ["Q1", "Q2"]
        assert all(
            (e.lease_owner, e.lease_expires_at_ms) == ("replica-a", clock.ms + 30_000) for e in got
        )
        assert [e.queue_id for e in await repo.claim_due("replica-b", 10, 30)] == ["Q3"]
        assert await repo.claim_due("replica-b", 10, 30) == []
        clock.advance(60)
        # Q4 is due now, and the leases of Q1-Q3 have expired (30 s): all claimable again.
        got = await repo.claim_due("replica-b", 10, 30)
        assert sorted(e.queue_id for e in got) == ["Q1", "Q2", "Q3", "Q4"]

    async def test_enqueue_without_time_is_due_now(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        stored, _ = await repo.enqueue(entry())
        assert stored.next_attempt_at_ms == clock.ms
        assert [e.queue_id for e in await repo.claim_due("r", 1, 10)] == ["Q1"]

    async def test_leased_entry_is_not_claimed_until_expiry(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.enqueue(entry())
        assert len(await repo.claim_due("a", 10, 60)) == 1
        clock.advance(59)
        assert await repo.claim_due("b", 10, 60) == []
        clock.advance(2)
        (taken,) = await repo.claim_due("b", 10, 60)
        assert taken.lease_owner == "b"
        # The first owner lost it: it may neither reschedule nor delete.
        with pytest.raises(LeaseNotHeld):
            await repo.reschedule("Q1", "bob@example.net", "a", clock.ms + 1000, "late")
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q1", "bob@example.net", "a")
        assert (await repo.get("Q1", "bob@example.net")) == taken

    async def test_expired_lease_is_held_until_taken(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.enqueue(entry())
        await repo.claim_due("a", 1, 10)
        clock.advance(100)  # expired, but nobody claimed it since
        after = await repo.reschedule("Q1", "bob@example.net", "a", clock.ms + 5000, "slow")
        assert (after.attempts, after.lease_owner) == (1, "")

    async def test_reschedule_releases_with_next_attempt(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.enqueue(entry(attempts=1, last_error="first"))
        await repo.claim_due("a", 1, 300)
        with pytest.raises(LeaseNotHeld):
            await repo.reschedule("Q1", "bob@example.net", "b", clock.ms, "not mine")
        with pytest.raises(NotFound):
            await repo.reschedule("Q9", "bob@example.net", "a", clock.ms, "no such entry")
        after = await repo.reschedule(
            "Q1", "bob@example.net", "a", clock.ms + 600_000, "451 4.7.1 try later"
        )
        assert (after.attempts, after.next_attempt_at_ms, after.last_error) == (
            2, clock.ms + 600_000, "451 4.7.1 try later",
        )  # fmt: skip
        assert (after.lease_owner, after.lease_expires_at_ms) == ("", 0)
        assert await repo.get("Q1", "bob@example.net") == after
        # Released: a repeated Reschedule (e.g. a retried call) is refused, changes nothing.
        with pytest.raises(LeaseNotHeld):
            await repo.reschedule("Q1", "bob@example.net", "a", clock.ms, "again")
        assert await repo.claim_due("a", 1, 300) == []  # not due for 10 minutes
        clock.advance(600)
        (again,) = await repo.claim_due("b", 1, 300)
        assert (again.attempts, again.lease_owner) == (2, "b")

    async def test_a_delay_notice_is_recorded_once_and_kept(
        self, open_repo: OpenRepo, repo: QueueRepository, clock: FakeClock
    ) -> None:
        """The delivery service's "sender was told of the delay" (RFC 3464 Action: delayed):
        set by the Reschedule after the notice, kept through claims, takeovers and later
        Reschedules, and seen by every replica; the first time recorded stays."""
        stored, _ = await repo.enqueue(entry(lease_owner="a", lease_seconds=60))
        assert stored.delay_notified_at_ms == 0
        after = await repo.reschedule("Q1", "bob@example.net", "a", clock.ms, "451 later")
        assert after.delay_notified_at_ms == 0  # nothing asked: nothing recorded
        (claimed,) = await repo.claim_due("a", 1, 60)
        assert claimed.delay_notified_at_ms == 0
        told = clock.ms - 5
        after = await repo.reschedule("Q1", "bob@example.net", "a", clock.ms, "451 later", told)
        assert (after.attempts, after.delay_notified_at_ms) == (2, told)
        other = await open_repo(clock)  # another replica
        assert (await other.get("Q1", "bob@example.net")) == after
        (taken,) = await other.claim_due("b", 1, 60)
        assert (taken.lease_owner, taken.delay_notified_at_ms) == ("b", told)
        clock.advance(120)  # b died holding it; c takes it over
        (taken,) = await repo.claim_due("c", 1, 60)
        assert (taken.lease_owner, taken.delay_notified_at_ms) == ("c", told)
        after = await repo.reschedule("Q1", "bob@example.net", "c", clock.ms, "451 still")
        assert after.delay_notified_at_ms == told
        await repo.claim_due("c", 1, 60)
        again = await repo.reschedule("Q1", "bob@example.net", "c", clock.ms, "451 still", clock.ms)
        assert (again.attempts, again.delay_notified_at_ms) == (4, told)  # the first stays
        page, _ = await other.list_entries("Q1", "", 10)
        assert [e.delay_notified_at_ms for e in page] == [told]
        await repo.claim_due("c", 1, 60)
        with pytest.raises(InvalidArgument):
            await repo.reschedule("Q1", "bob@example.net", "c", clock.ms, "x", -1)

    async def test_delete_by_holder_only(self, repo: QueueRepository, clock: FakeClock) -> None:
        await repo.enqueue(entry())
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q1", "bob@example.net", "a")  # not claimed at all
        await repo.claim_due("a", 1, 300)
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q1", "bob@example.net", "b")
        await repo.delete("Q1", "bob@example.net", "a")
        assert await repo.get("Q1", "bob@example.net") is None
        with pytest.raises(NotFound):
            await repo.delete("Q1", "bob@example.net", "a")
        assert (await repo.stats()).entries == 0
        # A new Enqueue after the entry is gone makes a new entry.
        fresh, dup = await repo.enqueue(entry(attempts=3))
        assert not dup and (fresh.attempts, fresh.lease_owner) == (3, "")
        (claimed,) = await repo.claim_due("c", 1, 10)
        assert claimed.lease_owner == "c"

    async def test_delete_many_is_delete_per_entry(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        for q in ("Q1", "Q2", "Q3"):
            await repo.enqueue(entry(q))
        await repo.claim_due("a", 2, 300)  # Q1 and Q2 (oldest first: same time, by id)
        await repo.claim_due("b", 1, 300)  # Q3
        rcpt = "bob@example.net"
        results = await repo.delete_many(
            [("Q1", rcpt, "a"), ("Q3", rcpt, "a"), ("Q9", rcpt, "a"), ("Q2", rcpt, "a")]
        )
        assert results[0] is None and results[3] is None
        assert isinstance(results[1], LeaseNotHeld) and isinstance(results[2], NotFound)
        assert await repo.get("Q1", rcpt) is None and await repo.get("Q2", rcpt) is None
        assert (await repo.get("Q3", rcpt)) is not None  # another owner's: untouched
        (again,) = await repo.delete_many([("Q1", rcpt, "a")])
        assert isinstance(again, NotFound)
        for bad in ([], [("Q3", rcpt, "")], [("", rcpt, "b")], [("Q3", rcpt, "b")] * 1001):
            with pytest.raises(InvalidArgument):
                await repo.delete_many(bad)
        assert (await repo.get("Q3", rcpt)) is not None  # a refused call deleted nothing

    async def test_delete_many_after_takeover_deletes_nothing_of_the_new_owner(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        """A replica whose leases expired finishes late while another takes the entries over:
        each entry is deleted at most by the one that holds it."""
        repos = [await open_repo(clock) for _ in range(3)]
        for i in range(6):
            await repos[0].enqueue(entry(f"Q{i}"))
        await repos[0].claim_due("old", 6, 10)
        clock.advance(11)
        items = [(f"Q{i}", "bob@example.net", "old") for i in range(6)]
        late, taken = await asyncio.gather(
            repos[1].delete_many(items), repos[2].claim_due("new", 6, 10)
        )
        mine = {e.queue_id for e in taken}
        for (qid, _, _), result in zip(items, late, strict=True):
            if qid in mine:
                assert isinstance(result, LeaseNotHeld)
                assert (await repos[0].get(qid, "bob@example.net")) is not None
            else:
                assert result is None
                assert await repos[0].get(qid, "bob@example.net") is None

    async def test_claim_one_entry_now_unless_another_lease_runs(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        later = clock.ms + 3_600_000
        await repo.enqueue(entry(next_attempt_at_ms=later))
        assert await repo.claim_due("a", 10, 60) == []  # not due
        taken = await repo.claim("Q1", "bob@example.net", "admin", 60)
        assert (taken.lease_owner, taken.lease_expires_at_ms) == ("admin", clock.ms + 60_000)
        assert taken.next_attempt_at_ms == later and taken.attempts == 0
        with pytest.raises(LeaseNotHeld):
            await repo.claim("Q1", "bob@example.net", "b", 60)
        again = await repo.claim("Q1", "bob@example.net", "admin", 120)  # the holder renews
        assert again.lease_expires_at_ms == clock.ms + 120_000
        clock.advance(121)
        stolen = await repo.claim("Q1", "bob@example.net", "b", 60)  # expired: anyone
        assert stolen.lease_owner == "b"
        with pytest.raises(LeaseNotHeld):
            await repo.delete("Q1", "bob@example.net", "admin")
        await repo.delete("Q1", "bob@example.net", "b")
        with pytest.raises(NotFound):
            await repo.claim("Q1", "bob@example.net", "b", 60)

    async def test_claim_validates(self, repo: QueueRepository) -> None:
        for who, n, lease in (("", 1, 10), ("a", 0, 10), ("a", 1, 0), ("a", 1001, 10)):
            with pytest.raises(InvalidArgument):
                await repo.claim_due(who, n, lease)

    async def test_concurrent_claimers_get_each_entry_once(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        """N replicas (separate repository instances) race for M due entries, twice: fresh
        entries, then the same entries after all their leases expired."""
        replicas, items = 6, 40
        repos = [await open_repo(clock) for _ in range(replicas)]
        for i in range(items):
            await repos[0].enqueue(entry(f"Q{i:03d}", next_attempt_at_ms=clock.ms - i))

        async def drain(n: int, repo: QueueRepository) -> list[str]:
            got: list[str] = []
            while batch := await repo.claim_due(f"replica-{n}", 3, 60):
                got += [e.queue_id for e in batch]
                assert all(e.lease_owner == f"replica-{n}" for e in batch)
                await asyncio.sleep(0)
            return got

        for _ in range(2):
            claims = await asyncio.gather(*(drain(n, r) for n, r in enumerate(repos)))
            counts = Counter(q for got in claims for q in got)
            assert len(counts) == items and set(counts.values()) == {1}, counts
            clock.advance(61)

    async def test_concurrent_reschedule_and_takeover_have_one_winner(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        """An owner whose lease expired finishes while other replicas try to take it over."""
        repos = [await open_repo(clock) for _ in range(5)]
        await repos[0].enqueue(entry())
        await repos[0].claim_due("old", 1, 10)
        clock.advance(11)

        async def finish() -> str:
            try:
                await repos[0].reschedule("Q1", "bob@example.net", "old", clock.ms + 60_000, "e")
            except LeaseNotHeld:
                return ""
            return "old"

        async def take(n: int) -> str:
            got = await repos[n].claim_due(f"new-{n}", 1, 10)
            return got[0].lease_owner if got else ""

        winners = [w for w in await asyncio.gather(finish(), *map(take, range(1, 5))) if w]
        assert len(winners) == 1
        current = await repos[0].get("Q1", "bob@example.net")
        assert current is not None
        if winners == ["old"]:
            assert (current.lease_owner, current.attempts) == ("", 1)
        else:
            assert (current.lease_owner, current.attempts) == (winners[0], 0)

    # -- list and stats ------------------------------------------------------------------------

    async def test_list_pages_through_everything_once(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        for q in ("QA", "QB", "QC"):
            for r in ("x@example.net", "y@example.net", "z@example.net"):
                await repo.enqueue(entry(q, r))
        seen: list[tuple[str, str]] = []
        token = ""
        pages = 0
        while True:
            page, token = await repo.list_entries("", token, 4)
            pages += 1
            seen += [(e.queue_id, e.recipient) for e in page]
            if not token:
                break
        assert pages == 3 and len(seen) == 9 and len(set(seen)) == 9
        assert seen == sorted(seen)
        only, token = await repo.list_entries("QB", "", 0)
        assert [e.recipient for e in only] == ["x@example.net", "y@example.net", "z@example.net"]
        assert token == ""
        with pytest.raises(InvalidArgument):
            await repo.list_entries("", "garbage", 4)
        with pytest.raises(InvalidArgument):
            await repo.list_entries("", "", 5000)

    async def test_stats(self, repo: QueueRepository, clock: FakeClock) -> None:
        s = await repo.stats()
        assert (s.entries, s.due, s.leased, s.oldest_created_at_ms) == (0, 0, 0, 0)
        await repo.enqueue(entry("Q1"))
        clock.advance(1)
        await repo.enqueue(entry("Q2"))
        await repo.enqueue(entry("Q3", next_attempt_at_ms=clock.ms + 60_000))
        await repo.claim_due("a", 1, 30)
        s = await repo.stats()
        assert (s.entries, s.due, s.leased, s.oldest_created_at_ms) == (3, 1, 1, clock.ms - 1000)

    # -- maildrop locks ------------------------------------------------------------------------

    async def test_lock_is_exclusive_until_released(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        first = await repo.acquire_lock("alice@example.com", "s1", 60)
        assert (first.granted, first.holder, first.expires_at_ms) == (True, "s1", clock.ms + 60_000)
        second = await repo.acquire_lock("alice@example.com", "s2", 60)
        assert (second.granted, second.holder, second.expires_at_ms) == (
            False, "s1", clock.ms + 60_000,
        )  # fmt: skip
        assert (await repo.acquire_lock("bob@example.com", "s2", 60)).granted  # another user
        assert not await repo.release_lock("alice@example.com", "s2")  # not the holder
        assert await repo.release_lock("alice@example.com", "s1")
        assert not await repo.release_lock("alice@example.com", "s1")
        assert not (await repo.renew_lock("alice@example.com", "s1", 60)).granted
        assert (await repo.acquire_lock("alice@example.com", "s2", 60)).granted

    async def test_holder_acquiring_again_renews(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.acquire_lock("u", "s1", 60)
        clock.advance(30)
        again = await repo.acquire_lock("u", "s1", 60)
        assert (again.granted, again.expires_at_ms) == (True, clock.ms + 60_000)

    async def test_lock_expires_and_renewal_keeps_it(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.acquire_lock("u", "s1", 30)
        clock.advance(20)
        renewed = await repo.renew_lock("u", "s1", 30)
        assert (renewed.granted, renewed.expires_at_ms) == (True, clock.ms + 30_000)
        clock.advance(20)  # 40 s after acquiring: held thanks to the renewal
        assert not (await repo.acquire_lock("u", "s2", 30)).granted
        clock.advance(11)  # the crashed holder stopped renewing: expired
        taken = await repo.acquire_lock("u", "s2", 30)
        assert (taken.granted, taken.holder) == (True, "s2")
        lost = await repo.renew_lock("u", "s1", 30)
        assert (lost.granted, lost.holder) == (False, "s2")
        assert not await repo.release_lock("u", "s1")
        assert (await repo.renew_lock("u", "s2", 30)).granted

    async def test_expired_lock_renews_if_not_taken(
        self, repo: QueueRepository, clock: FakeClock
    ) -> None:
        await repo.acquire_lock("u", "s1", 10)
        clock.advance(60)
        assert (await repo.renew_lock("u", "s1", 10)).granted
        assert not (await repo.renew_lock("u", "nobody", 10)).granted

    async def test_lock_validates(self, repo: QueueRepository) -> None:
        for user, who, lease in (("", "s", 10), ("u", "", 10), ("u", "s", 0), ("u", "s", 3601)):
            with pytest.raises(InvalidArgument):
                await repo.acquire_lock(user, who, lease)

    async def test_concurrent_acquirers_one_wins(
        self, open_repo: OpenRepo, clock: FakeClock
    ) -> None:
        repos = [await open_repo(clock) for _ in range(6)]
        for _ in range(3):  # free, then held-and-expired twice
            results = await asyncio.gather(
                *(r.acquire_lock("u", f"s{n}", 30) for n, r in enumerate(repos))
            )
            winners = [r.holder for r in results if r.granted]
            assert len(winners) == 1, results
            assert all(r.holder == winners[0] for r in results)
            clock.advance(31)
