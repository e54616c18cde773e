"""What an envelope recipient of a local domain delivers to (docs/adr/0022).

The order is Postfix's virtual_alias_maps with recipient_delimiter: the exact address (a user,
or an alias, which takes precedence over a user of the same name), then the address without its
``+tag``, then (for postmaster@, RFC 5321 §4.5.1) the configured postmaster address, then the
domain's catch-all; the first that exists decides. Aliases expand recursively into local users
and remote addresses, each once, with a depth limit and loop protection."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from postmesh.auth.addresses import (
    InvalidAddress,
    canonical_address,
    canonical_domain,
    domain_of,
    unquoted_local_part,
)
from postmesh.auth.records import RecordRepository
from postmesh.auth.repository import AccountRepository
from postmesh.common.logging import get_logger, kv

log = get_logger(__name__)

# Alias chains deeper than this are cut (Postfix: virtual_alias_recursion_limit); a chain that
# long is a configuration mistake, not a design.
MAX_ALIAS_DEPTH = 8
# At most this many targets per recipient (Postfix: virtual_alias_expansion_limit).
MAX_TARGETS = 1000
# How long a domain found local is taken as local without asking the database again.
LOCAL_DOMAIN_SECONDS = 60.0
LOCAL_DOMAINS_KEPT = 10_000


POSTMASTER = "postmaster"


class RecipientKind(Enum):
    LOCAL_USER = "local"
    UNKNOWN_LOCAL = "unknown_local"
    DISABLED = "disabled"
    REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class Resolution:
    kind: RecipientKind
    # Canonical local users, each once, and remote addresses an alias forwards to.
    users: tuple[str, ...] = ()
    remote: tuple[str, ...] = ()
    # Only the catch-all matched: nobody owns this address (the sender check must not use it).
    catch_all: bool = False


@dataclass
class _Expansion:
    users: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    domains: dict[str, bool] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return len(self.users) + len(self.remote) >= MAX_TARGETS


def strip_extension(address: str, delimiters: str) -> str | None:
    """``user+tag@d`` -> ``user@d`` (each character of ``delimiters`` separates, as in Postfix
    2.11+); None when there is no extension to strip."""
    if not delimiters:
        return None
    local, _, domain = address.rpartition("@")
    cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
    return f"{local[:cut]}@{domain}" if cut > 0 else None


async def _nothing() -> None:
    return None


class RecipientResolver:
    def __init__(
        self,
        repo: AccountRepository,
        records: RecordRepository | None,
        delimiters: str = "+",
        postmaster: str = "",
    ) -> None:
        self.repo = repo
        self.records = records
        self.delimiters = delimiters
        # Checked at start: a postmaster that is no address is a configuration error.
        self.postmaster = canonical_address(postmaster) if postmaster.strip() else ""
        # Domains found local, with when: a domain is never removed (there is no API for it),
        # so a positive answer stays right; re-read after LOCAL_DOMAIN_SECONDS all the same.
        # Every address of a submitted or delivered message is resolved (ADR 35).
        self._local: OrderedDict[str, float] = OrderedDict()

    async def _is_local(self, domain: str) -> bool:
        seen = self._local.get(domain)
        if seen is not None and time.monotonic() - seen < LOCAL_DOMAIN_SECONDS:
            return True
        if await self.repo.get_domain(domain) is None:
            self._local.pop(domain, None)
            return False
        self._local[domain] = time.monotonic()
        self._local.move_to_end(domain)
        if len(self._local) > LOCAL_DOMAINS_KEPT:
            self._local.popitem(last=False)
        return True

    async def resolve(self, address: str) -> Resolution:
        """Raises InvalidAddress for a syntactically invalid address (one without local@domain)."""
        if address.strip().strip("<>").lower() == POSTMASTER:
            # RFC 5321 §4.5.1: <Postmaster> with no domain is this system's postmaster.
            found = await self._postmaster(POSTMASTER)
            return found or Resolution(RecipientKind.UNKNOWN_LOCAL)
        try:
            canonical = canonical_address(address)
        except InvalidAddress:
            return await self._beyond_account_syntax(address)
        domain = domain_of(canonical)
        if not await self._is_local(domain):
            return Resolution(RecipientKind.REMOTE)
        candidates = [canonical]
        stripped = strip_extension(canonical, self.delimiters)
        if stripped is not None:
            candidates.append(stripped)
        for candidate in candidates:
            found = await self._exact(candidate)
            if found is not None:
                return found
        if canonical.startswith(POSTMASTER + "@"):
            found = await self._postmaster(canonical)
            if found is not None:
                return found
        target = await self.records.get_catch_all(domain) if self.records else None
        if target is not None:
            exp = _Expansion(seen={canonical})
            await self._expand(target, 1, exp)
            if exp.users or exp.remote:
                return Resolution(
                    RecipientKind.LOCAL_USER, tuple(exp.users), tuple(exp.remote), catch_all=True
                )
        return Resolution(RecipientKind.UNKNOWN_LOCAL)

    async def _postmaster(self, address: str) -> Resolution | None:
        """Where postmaster mail of a domain without its own postmaster address goes: the
        configured address, expanded like an alias target; None when there is none."""
        if not self.postmaster:
            return None
        exp = _Expansion(seen={address})
        await self._expand(self.postmaster, 1, exp)
        if not (exp.users or exp.remote):
            return None
        return Resolution(RecipientKind.LOCAL_USER, tuple(exp.users), tuple(exp.remote))

    async def _beyond_account_syntax(self, address: str) -> Resolution:
        """An address RFC 5321 allows that no account or alias can have (they are dot-atoms of
        at most 64 octets at a domain name): a quoted local part whose content is a dot-atom is
        that address; anything else (a quoted "a b", a long SRS or VERP local part, a domain
        literal) is an unknown recipient of ours, or a remote one, never an error: the edges
        answered such an address with a temporary failure, retried for days."""
        unquoted = unquoted_local_part(address)
        if unquoted is not None:
            try:
                return await self.resolve(unquoted)
            except InvalidAddress:
                pass
        local, sep, domain = address.strip().strip("<>").rpartition("@")
        if not sep or not local or not domain:
            raise InvalidAddress(f"invalid address {address!r}: expected local-part@domain")
        try:
            name = canonical_domain(domain)
        except InvalidAddress:
            return Resolution(RecipientKind.REMOTE)  # a domain literal: no domain of ours
        if await self._is_local(name):
            return Resolution(RecipientKind.UNKNOWN_LOCAL)
        return Resolution(RecipientKind.REMOTE)

    async def _exact(self, address: str) -> Resolution | None:
        """What ``address`` itself delivers to; None when no user or alias has it."""
        # Independent reads, sent at once: one round trip's latency instead of three (the
        # answer for a user needs them all; an alias wastes two reads). Every submitted and
        # delivered message resolves addresses on the way (ADR 35).
        alias, user, disabled = await asyncio.gather(
            self.records.get_alias(address) if self.records else _nothing(),
            self.repo.get_user(address),
            self._disabled(address),
        )
        if alias is None:
            if user is None:
                return None
            if disabled:
                return Resolution(RecipientKind.DISABLED)
            return Resolution(RecipientKind.LOCAL_USER, (address,))
        exp = _Expansion()
        await self._expand(address, 0, exp)
        if not (exp.users or exp.remote):
            # Every target is gone, disabled or part of a loop: nothing would receive it.
            return Resolution(RecipientKind.UNKNOWN_LOCAL)
        return Resolution(RecipientKind.LOCAL_USER, tuple(exp.users), tuple(exp.remote))

    async def _expand(self, address: str, depth: int, exp: _Expansion) -> None:
        if address in exp.seen or exp.full:
            return
        exp.seen.add(address)
        domain = domain_of(address)
        if domain not in exp.domains:
            exp.domains[domain] = await self._is_local(domain)
        if not exp.domains[domain]:
            exp.remote.append(address)
            return
        # A target written before its domain became local may keep its case: compare as local.
        address = address.lower()
        alias = await self.records.get_alias(address) if self.records else None
        if alias is None:
            await self._add_user(address, exp)
            return
        if depth >= MAX_ALIAS_DEPTH:
            log.warning("alias chain too deep; cut", extra=kv(alias=address, depth=depth))
            return
        for target in alias.targets:
            if target == address:
                # An alias naming itself keeps a copy in its own mailbox (Postfix's
                # "user@d -> user@d, other@x": deliver and forward).
                await self._add_user(address, exp)
            else:
                await self._expand(target, depth + 1, exp)

    async def _add_user(self, address: str, exp: _Expansion) -> None:
        if address in exp.users or exp.full:
            return
        if await self.repo.get_user(address) is None:
            log.info("alias target does not exist; skipped", extra=kv(target=address))
            return
        if await self._disabled(address):
            return
        exp.users.append(address)

    async def _disabled(self, address: str) -> bool:
        return self.records is not None and await self.records.is_disabled(address)
