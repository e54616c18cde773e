"""Recently verified passwords, so a client that logs in every minute costs one argon2
verification per TTL instead of one per login (Dovecot's auth_cache does the same).

An entry holds an HMAC of (user, password) under a per-process random key, never the password,
and the user's password hash at the time: a password changed through any replica changes the
stored hash, so the entry stops matching at once. Failed logins are never cached; lockout and
disabled-account checks run before and after a hit just as without the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from prometheus_client import Counter

from postmesh.common.lru import Lru

LOOKUPS = Counter(
    "postmesh_auth_login_cache_lookups_total",
    "Password checks answered from the login cache (hit) or by argon2 (miss).",
    ["result"],
)


class LoginCache:
    def __init__(
        self, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: Lru[str, tuple[bytes, str, float]] = Lru(max(0, max_entries))

    def _digest(self, address: str, password: str) -> bytes:
        msg = address.encode() + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def hit(self, address: str, password: str, password_hash: str) -> bool:
        entry = self._entries.get(address)
        ok = (
            entry is not None
            and entry[2] > self._clock()
            and entry[1] == password_hash
            and hmac.compare_digest(entry[0], self._digest(address, password))
        )
        LOOKUPS.labels("hit" if ok else "miss").inc()
        return ok

    def add(self, address: str, password: str, password_hash: str) -> None:
        if self._ttl <= 0:
            return
        self._entries.put(
            address, (self._digest(address, password), password_hash, self._clock() + self._ttl)
        )

    def forget(self, address: str) -> None:
        self._entries.pop(address)
