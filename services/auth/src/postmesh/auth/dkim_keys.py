"""DKIM keys of the local domains: generation, rotation by selector, which key signs, which are
published (RFC 6376 section 3.6, RFC 8463; rotation practice of M3AAWG's DKIM key rotation BCP).

A key is never updated in place. Rotation inserts a new key (new selector) that starts signing
at its ``activates_at``; the key it supersedes stays published for a grace period so signatures
on mail still in flight or in queues keep verifying, then it is only listed (expired) until an
operator deletes it. Every state follows from the stored times and the clock, so both
repositories need only inserts, reads and deletes.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from postmesh.auth.repository import AccountRepository, DkimKey, NotFound
from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth import dkim

log = get_logger(__name__)

_SELECTOR_TAG = {dkim.DkimAlgorithm.RSA_SHA256: "rsa", dkim.DkimAlgorithm.ED25519_SHA256: "ed"}


class KeyState(enum.StrEnum):
    PENDING = "pending"  # published, signs from activates_at on
    ACTIVE = "active"  # signs (at most one per algorithm)
    RETIRED = "retired"  # superseded, still published during the grace period
    EXPIRED = "expired"  # superseded and past the grace period: remove it from DNS, delete it

    @property
    def published(self) -> bool:
        return self is not KeyState.EXPIRED


@dataclass(frozen=True, slots=True)
class KeyView:
    key: DkimKey
    state: KeyState
    # When the next key of the same algorithm started signing (None unless retired/expired).
    superseded_at: float | None = None

    @property
    def algorithm(self) -> dkim.DkimAlgorithm:
        return dkim.DkimAlgorithm(self.key.algorithm)


def classify(keys: Sequence[DkimKey], now: float, grace_seconds: float) -> list[KeyView]:
    """The state of every key at ``now``, in the order given."""
    states: dict[str, KeyView] = {}
    by_algorithm: dict[str, list[DkimKey]] = {}
    for k in keys:
        by_algorithm.setdefault(k.algorithm, []).append(k)
    for group in by_algorithm.values():
        group.sort(key=lambda k: (k.activates_at, k.created_at, k.selector))
        started = [k for k in group if k.activates_at <= now]
        for k in group:
            if k.activates_at > now:
                states[k.selector] = KeyView(k, KeyState.PENDING)
        if not started:
            continue
        states[started[-1].selector] = KeyView(started[-1], KeyState.ACTIVE)
        for older, newer in itertools.pairwise(started):
            gone = newer.activates_at + grace_seconds <= now
            state = KeyState.EXPIRED if gone else KeyState.RETIRED
            states[older.selector] = KeyView(older, state, newer.activates_at)
    return [states[k.selector] for k in keys]


def new_selector(algorithm: dkim.DkimAlgorithm, now: float, taken: Iterable[str]) -> str:
    """``rsa-20261204-1a2b``: the algorithm and date say what a DNS record is at a glance; the
    random part keeps two rotations on one day apart. A DNS label (RFC 6376 section 3.1)."""
    used = set(taken)
    day = time.strftime("%Y%m%d", time.gmtime(now))
    while True:
        selector = f"{_SELECTOR_TAG[algorithm]}-{day}-{secrets.token_hex(2)}"
        if selector not in used:
            return selector


def _generate(
    algorithm: dkim.DkimAlgorithm, selector: str, now: float, activates_at: float
) -> DkimKey:
    pair = dkim.generate_key(algorithm)
    return DkimKey(selector, algorithm.value, pair.private_key, pair.public_key, now, activates_at)


class DkimKeys:
    def __init__(
        self,
        repo: AccountRepository,
        *,
        ed25519: bool = True,
        rotation_activation_seconds: float = 86400.0,
        retired_grace_seconds: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.ed25519 = ed25519
        self.rotation_activation_seconds = rotation_activation_seconds
        self.retired_grace_seconds = retired_grace_seconds
        self.clock = clock

    def default_algorithms(self) -> list[dkim.DkimAlgorithm]:
        # RSA always: RFC 8463 section 5 expects Ed25519 next to RSA, since not every verifier
        # knows ed25519-sha256 yet.
        algorithms = [dkim.DkimAlgorithm.RSA_SHA256]
        if self.ed25519:
            algorithms.append(dkim.DkimAlgorithm.ED25519_SHA256)
        return algorithms

    async def generate(
        self,
        algorithms: Sequence[dkim.DkimAlgorithm],
        activates_at: float,
        taken: Iterable[str] = (),
    ) -> list[DkimKey]:
        """New keys, one per algorithm; generation (tens of ms for RSA) runs in a thread."""
        now = self.clock()
        used = set(taken)
        keys = []
        for algorithm in algorithms:
            selector = new_selector(algorithm, now, used)
            used.add(selector)
            keys.append(await asyncio.to_thread(_generate, algorithm, selector, now, activates_at))
        return keys

    async def initial_keys(self) -> list[DkimKey]:
        """The keys of a new domain: they sign at once (nothing was signed before)."""
        return await self.generate(self.default_algorithms(), self.clock())

    async def views(self, domain: str) -> list[KeyView]:
        return classify(
            await self.repo.list_dkim_keys(domain), self.clock(), self.retired_grace_seconds
        )

    async def active(self, domain: str) -> list[DkimKey]:
        """The signing keys: at most one per algorithm, RSA first."""
        active = [v.key for v in await self.views(domain) if v.state is KeyState.ACTIVE]
        return sorted(active, key=lambda k: k.algorithm != dkim.DkimAlgorithm.RSA_SHA256.value)

    async def rotate(
        self,
        domain: str,
        algorithm: dkim.DkimAlgorithm | None = None,
        activate_in_seconds: float | None = None,
    ) -> list[DkimKey]:
        """New keys for ``domain`` (one algorithm, or every algorithm it signs with); each
        starts signing after ``activate_in_seconds`` (default: the configured delay), at once
        for an algorithm that has no signing key yet. Raises NotFound."""
        if await self.repo.get_domain(domain) is None:
            raise NotFound(f"domain {domain} is not a local domain")
        views = await self.views(domain)
        if algorithm is not None:
            algorithms = [algorithm]
        else:
            present = {v.algorithm for v in views}
            algorithms = [
                a for a in dkim.DkimAlgorithm if a in present or a in self.default_algorithms()
            ]
        delay = (
            self.rotation_activation_seconds if activate_in_seconds is None else activate_in_seconds
        )
        now = self.clock()
        latest: dict[dkim.DkimAlgorithm, float] = {}
        for v in views:
            if v.state is KeyState.PENDING:
                continue
            latest[v.algorithm] = max(latest.get(v.algorithm, 0.0), v.key.activates_at)
        signing = {v.algorithm for v in views if v.state is KeyState.ACTIVE}
        added = []
        for a in algorithms:
            when = now + delay if a in signing else now
            # Strictly after the keys that signed so far, so "newest" is never a tie.
            when = max(when, latest.get(a, 0.0) + 0.001)
            (key,) = await self.generate([a], when, (v.key.selector for v in views))
            await self.repo.add_dkim_key(domain, key)
            added.append(key)
            log.info(
                "dkim key created",
                extra=kv(
                    domain=domain, selector=key.selector, algorithm=a.value, activates_at=when
                ),
            )
        return added

    async def delete(self, domain: str, selector: str) -> None:
        """Raises NotFound for an unknown key, KeyInUse for a key that signs now."""
        for v in await self.views(domain):
            if v.key.selector == selector and v.state is KeyState.ACTIVE:
                raise KeyInUse(
                    f"dkim key {selector} of {domain} signs now: rotate first, then delete it"
                )
        if not await self.repo.delete_dkim_key(domain, selector):
            raise NotFound(f"no dkim key {selector} for domain {domain}")
        log.info("dkim key deleted", extra=kv(domain=domain, selector=selector))

    async def ensure_keys(self) -> int:
        """Gives keys to every domain that has none (domains from before DKIM, or a crash
        between a domain and its keys on MongoDB). Returns how many domains got keys."""
        count = 0
        for d in await self.repo.list_domains():
            if await self.repo.list_dkim_keys(d.name):
                continue
            for key in await self.initial_keys():
                await self.repo.add_dkim_key(d.name, key)
            log.info("dkim keys created for existing domain", extra=kv(domain=d.name))
            count += 1
        return count


class KeyInUse(Exception):
    pass
