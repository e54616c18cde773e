"""Recent recipient resolutions, so a message does not cost a database read per address and
hop (docs/adr/0045).

Every message resolves its addresses several times on its way (the sender and each recipient
at smtp-edge, each recipient again at delivery), each resolution three reads (alias, user,
account state). Only answers that deliver to local users are kept: an unknown address or a
remote domain is asked again every time, so a user or domain just created receives mail at
once. A kept answer stops being used when any of these happens first:
- a write through this replica changed aliases, a catch-all or an account's state
  (``forget_all``, called by the writers);
- the backend's change stamp, read at most once per ``check_seconds``, differs from the one
  the answers were kept under (a write through another replica);
- it is ``ttl_seconds`` old (the bound if a stamp write was lost, e.g. a crash between a
  MongoDB write and its stamp).
So another replica's change is seen within about ``check_seconds``, as Dovecot's auth cache
with a TTL, but bounded by the stamp rather than the TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from postmesh.auth.recipients import RecipientKind, Resolution

LOOKUPS = Counter(
    "postmesh_auth_resolution_cache_lookups_total",
    "Recipient resolutions answered from the cache (hit) or by the database (miss).",
    ["result"],
)


class ResolutionCache:
    def __init__(
        self,
        read_stamp: Callable[[], Awaitable[str]],
        ttl_seconds: float,
        *,
        check_seconds: float = 1.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_stamp = read_stamp
        self._ttl = ttl_seconds
        self._check = check_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Resolution, float]] = OrderedDict()
        self._stamp: str | None = None
        self._checked_at = -check_seconds
        # Bumped by every flush: an answer read before a flush is not kept after it.
        self._epoch = 0

    async def resolve(
        self, address: str, resolve: Callable[[str], Awaitable[Resolution]]
    ) -> Resolution:
        await self._check_stamp()
        now = self._clock()
        hit = self._entries.get(address)
        if hit is not None and now - hit[1] < self._ttl:
            self._entries.move_to_end(address)
            LOOKUPS.labels("hit").inc()
            return hit[0]
        LOOKUPS.labels("miss").inc()
        epoch = self._epoch
        result = await resolve(address)
        if result.kind is RecipientKind.LOCAL_USER and epoch == self._epoch:
            self._entries[address] = (result, now)
            self._entries.move_to_end(address)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return result

    def forget_all(self) -> None:
        self._entries.clear()
        self._epoch += 1

    async def _check_stamp(self) -> None:
        now = self._clock()
        if now - self._checked_at < self._check:
            return
        # Set first: the calls meanwhile use the current answers instead of all asking again.
        self._checked_at = now
        stamp = await self._read_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.forget_all()
