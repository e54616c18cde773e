"""RCPT look-ups of local recipients, kept for a few seconds (ADR 43).

Every RCPT asked auth whether the address is local: a gRPC round trip of ~1-3 ms on the
critical path of each message, and ~1.3 ms of auth's CPU. Only the answer "a local user (or an
alias of one)" is kept, for ``ttl`` seconds from when it was asked: delivery looks every
recipient up again, and bounces mail for one removed or disabled since RCPT (which it already
had to do for mail accepted just before the change). Unknown, disabled and remote answers are
never kept, so a new user gets mail at once, and the MX refuses nothing it would now accept.
Concurrent look-ups of one address share one call."""

from __future__ import annotations

import time
from collections.abc import Callable

from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.scram import ScramParams, ScramVerdict
from postmesh.common.shared_calls import SharedCalls
from postmesh.smtp_edge import metrics
from postmesh.smtp_edge.backend import EdgeBackend, RecipientKind

# An address is kept at most this many at once (oldest first out): ~100 octets each.
MAX_ENTRIES = 10_000


class CachedRecipients:
    """``backend`` with :meth:`resolve_recipient` answered from memory when it can be."""

    def __init__(
        self,
        backend: EdgeBackend,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # address -> expiry, in insertion order (a refresh moves it to the end).
        self._local: dict[str, float] = {}
        # Concurrent look-ups of one address share one call (postmesh.common.shared_calls).
        self._ask: SharedCalls[str, RecipientKind] = SharedCalls(self._resolve)

    async def resolve_recipient(self, address: str) -> RecipientKind:
        expiry = self._local.get(address)
        if expiry is not None:
            if expiry > self._clock():
                metrics.RECIPIENT_CACHE.labels("hit").inc()
                return RecipientKind.LOCAL_USER
            del self._local[address]
        metrics.RECIPIENT_CACHE.labels("miss").inc()
        return await self._ask(address)

    async def _resolve(self, address: str) -> RecipientKind:
        """One call to auth; only "a local user" is kept, for ``ttl`` from when it was asked."""
        expiry = self._clock() + self.ttl
        kind = await self.backend.resolve_recipient(address)
        if kind is RecipientKind.LOCAL_USER and self.ttl > 0:
            self._local.pop(address, None)
            self._local[address] = expiry
            while len(self._local) > self.max_entries:
                del self._local[next(iter(self._local))]
        return kind

    # --- the rest of EdgeBackend, unchanged ---------------------------------------------------

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        return await self.backend.check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        return await self.backend.scram_params(username, remote_ip=remote_ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        return await self.backend.verify_scram(username, auth_message, proof, remote_ip=remote_ip)

    async def address_owners(self, address: str) -> list[str]:
        # Not kept: who may send as an address is an authorization, asked each time.
        return await self.backend.address_owners(address)

    async def put_blob(self, data: bytes) -> str:
        return await self.backend.put_blob(data)
