"""Failed-login back-off and temporary lockout, per account and per client IP.

Counters live in the records backend (SQLite or MongoDB), so every auth replica sees the same
failures: an attacker gains nothing by spreading guesses over edges or replicas. A locked key
is refused without checking the password (no argon2 cost is spent on a flood), even when the
password would be right; the lock ends by itself (docs/operations.md "Login lockout").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter

from postmesh.auth.records import FailureCount, RecordRepository
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

LOCKOUTS = Counter(
    "postmesh_auth_lockouts_total",
    "Temporary lockouts started, by scope (account or ip).",
    ["scope"],
)
LOCKED_REJECTIONS = Counter(
    "postmesh_auth_locked_rejections_total",
    "Logins refused because the account or client IP is locked out, by scope.",
    ["scope"],
)


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    account_failures: int = 10
    ip_failures: int = 100
    window_seconds: float = 900.0
    lockout_seconds: float = 900.0
    # Delay before answering a failure: base * 2^(failures-1), at most backoff_max.
    backoff_base_seconds: float = 0.25
    backoff_max_seconds: float = 4.0


def _keys(address: str, ip: str) -> list[tuple[str, str]]:
    keys = []
    if address:
        keys.append(("account", f"user:{address}"))
    if ip:
        keys.append(("ip", f"ip:{ip}"))
    return keys


class LoginGuard:
    def __init__(
        self,
        records: RecordRepository,
        policy: LockoutPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.records = records
        self.policy = policy
        self.clock = clock

    async def retry_after(self, address: str, ip: str) -> int:
        """Seconds until a lock on the account or the IP ends; 0 when neither is locked."""
        counts = {key: await self.records.get_failures(key) for _, key in _keys(address, ip)}
        return self.retry_after_of(counts, address, ip)

    @staticmethod
    def keys(address: str, ip: str) -> list[str]:
        """The failure keys :meth:`retry_after_of` needs the counts of."""
        return [key for _, key in _keys(address, ip)]

    def retry_after_of(
        self, counts: Mapping[str, FailureCount | None], address: str, ip: str
    ) -> int:
        """:meth:`retry_after` on counts already read (``keys``), as a login reads them with
        the rest of its records (ADR 0057)."""
        now = self.clock()
        for scope, key in _keys(address, ip):
            count = counts.get(key)
            if count is not None and count.locked_until > now:
                LOCKED_REJECTIONS.labels(scope).inc()
                return max(1, math.ceil(count.locked_until - now))
        return 0

    async def failed(self, address: str, ip: str) -> float:
        """Count a failure; returns the back-off delay to apply before answering."""
        now = self.clock()
        worst = 0
        for scope, key in _keys(address, ip):
            failures = await self.records.add_failure(key, now, self.policy.window_seconds)
            limit = self.policy.account_failures if scope == "account" else self.policy.ip_failures
            if failures >= limit:
                await self.records.lock(key, now + self.policy.lockout_seconds)
                LOCKOUTS.labels(scope).inc()
                log.warning(
                    "login lockout",
                    extra=kv(scope=scope, key=key, failures=failures,
                             seconds=self.policy.lockout_seconds),
                )  # fmt: skip
            if scope == "account":
                worst = failures
        if not worst or self.policy.backoff_base_seconds <= 0:
            return 0.0
        delay = self.policy.backoff_base_seconds * 2 ** min(worst - 1, 16)
        return float(min(delay, self.policy.backoff_max_seconds))

    async def succeeded(self, address: str) -> None:
        """A good login clears the account's count (not the IP's: one valid account must not
        launder a password spray)."""
        await self.records.clear_failures(f"user:{address}")
