"""Recent recipient resolutions, so a message does not cost a database read per address and
hop (docs/adr/0045).

Every message resolves its addresses several times on its way (the sender and each recipient
at smtp-edge, each recipient again at delivery), each resolution three reads (alias, user,
account state). Only answers that deliver to local users are kept: an unknown address or a
remote domain is asked again every time, so a user or domain just created receives mail at
once. When a kept answer stops being used (a write through this replica, the backend's change
stamp moving, or its age) is ``postmesh.common.stamped_cache``'s rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from postmesh.auth.recipients import RecipientKind, Resolution
from postmesh.common.stamped_cache import StampedCache

LOOKUPS = Counter(
    "postmesh_auth_resolution_cache_lookups_total",
    "Recipient resolutions answered from the cache (hit) or by the database (miss).",
    ["result"],
)


def _local(resolution: Resolution) -> bool:
    return resolution.kind is RecipientKind.LOCAL_USER


class ResolutionCache(StampedCache[str, Resolution]):
    async def resolve(
        self, address: str, resolve: Callable[[str], Awaitable[Resolution]]
    ) -> Resolution:
        result, hit = await self.get(address, resolve, _local)
        LOOKUPS.labels("hit" if hit else "miss").inc()
        return result
