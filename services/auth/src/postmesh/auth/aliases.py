"""Creating and changing aliases and catch-alls, with their targets checked (docs/adr/0022)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from postmesh.auth.addresses import (
    canonical_address,
    canonical_domain,
    domain_of,
    remote_address,
)
from postmesh.auth.records import Alias, RecordRepository
from postmesh.auth.repository import AccountRepository, AlreadyExists, NotFound

MAX_ALIAS_TARGETS = 100


class InvalidTarget(ValueError):
    """A target that cannot receive mail (an unknown local address, too many targets)."""


def _nothing_cached() -> None:
    return None


class Aliases:
    def __init__(
        self,
        repo: AccountRepository,
        records: RecordRepository,
        changed: Callable[[], None] = _nothing_cached,
    ) -> None:
        """``changed``: called after every write (cached resolutions are void)."""
        self.repo = repo
        self.records = records
        self._changed = changed

    async def _local_domain(self, address: str) -> str:
        domain = domain_of(address)
        if await self.repo.get_domain(domain) is None:
            raise NotFound(f"domain {domain} is not a local domain")
        return domain

    async def _target(self, raw: str, alias: str | None) -> str:
        """A local target must exist (user or alias) so a typo is refused now rather than
        bounced later; a remote one keeps its local part's case (RFC 5321 §2.4)."""
        target = remote_address(raw)
        if await self.repo.get_domain(domain_of(target)) is None:
            return target
        target = canonical_address(target)
        if target == alias:
            return target  # deliver to itself too (keep a copy and forward)
        if (
            await self.repo.get_user(target) is None
            and await self.records.get_alias(target) is None
        ):
            raise InvalidTarget(f"target {target} is neither a local user nor an alias")
        return target

    async def _targets(self, raw: Sequence[str], alias: str | None) -> tuple[str, ...]:
        if not raw:
            raise InvalidTarget("an alias needs at least one target")
        if len(raw) > MAX_ALIAS_TARGETS:
            raise InvalidTarget(f"an alias has at most {MAX_ALIAS_TARGETS} targets")
        targets: list[str] = []
        for t in raw:
            target = await self._target(t, alias)
            if target not in targets:
                targets.append(target)
        return tuple(targets)

    async def create(self, address: str, targets: Sequence[str]) -> Alias:
        """Raises InvalidAddress, NotFound (domain), InvalidTarget, AlreadyExists."""
        canonical = canonical_address(address)
        for t in targets:
            remote_address(t)  # every syntax error before any look-up
        await self._local_domain(canonical)
        checked = await self._targets(targets, canonical)
        if await self.records.get_alias(canonical) is not None:
            raise AlreadyExists(f"alias {canonical} exists")
        await self.records.set_alias(canonical, checked)
        self._changed()
        return Alias(canonical, checked)

    async def replace(self, address: str, targets: Sequence[str]) -> Alias:
        canonical = canonical_address(address)
        if await self.records.get_alias(canonical) is None:
            raise NotFound(f"alias {canonical} does not exist")
        checked = await self._targets(targets, canonical)
        await self.records.set_alias(canonical, checked)
        self._changed()
        return Alias(canonical, checked)

    async def get(self, address: str) -> Alias | None:
        return await self.records.get_alias(canonical_address(address))

    async def delete(self, address: str) -> bool:
        deleted = await self.records.delete_alias(canonical_address(address))
        self._changed()
        return deleted

    async def list(self, domain: str | None = None) -> list[Alias]:
        return await self.records.list_aliases(None if domain is None else canonical_domain(domain))

    async def set_catch_all(self, domain: str, target: str) -> str:
        """Mail to an unknown local part of ``domain`` goes to ``target``."""
        name = canonical_domain(domain)
        if await self.repo.get_domain(name) is None:
            raise NotFound(f"domain {name} is not a local domain")
        checked = await self._target(target, None)
        await self.records.set_catch_all(name, checked)
        self._changed()
        return checked

    async def get_catch_all(self, domain: str) -> str | None:
        return await self.records.get_catch_all(canonical_domain(domain))

    async def delete_catch_all(self, domain: str) -> bool:
        name = canonical_domain(domain)
        had = await self.records.get_catch_all(name) is not None
        await self.records.set_catch_all(name, None)
        self._changed()
        return had
