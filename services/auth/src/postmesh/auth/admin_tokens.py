"""Who calls the admin API: the admin token (every right) or an issued domain-admin token
(users, aliases, quotas, catch-alls and DKIM of its own domains only). Tokens are kept as
SHA-256 digests and checked in constant time (docs/adr/0026-admin-token-roles.md)."""

from __future__ import annotations

import enum
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postmesh.auth.addresses import canonical_domain
from postmesh.auth.repository import AccountRepository, AdminToken, AlreadyExists, NotFound
from postmesh.common.admin_token import (
    domain_admin_token_id,
    new_domain_admin_token,
    same_token,
    token_digest,
)

MAX_TOKEN_DOMAINS = 100


class Role(enum.StrEnum):
    ADMIN = "admin"
    DOMAIN_ADMIN = "domain-admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. ``token_id`` is None for the admin token of the settings."""

    role: Role
    domains: frozenset[str] = frozenset()
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_manage(self, domain: str) -> bool:
        """``domain`` is canonical (postmesh.auth.addresses)."""
        return self.is_admin or domain in self.domains


ADMIN = Principal(Role.ADMIN)


class AdminTokens:
    def __init__(
        self,
        repo: AccountRepository,
        admin_token: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self._admin_token = admin_token
        self._clock = clock

    async def authenticate(self, presented: str) -> Principal | None:
        """The caller a bearer token stands for, or None (unknown, revoked, expired)."""
        if same_token(presented, self._admin_token):
            return ADMIN
        token_id = domain_admin_token_id(presented)
        if token_id is None:
            return None
        stored = await self.repo.get_admin_token(token_id)
        # The id only finds the record; the secret half is what is checked, in constant time.
        if stored is None or not hmac.compare_digest(token_digest(presented), stored.token_digest):
            return None
        if stored.expires_at is not None and stored.expires_at <= self._clock():
            return None
        return Principal(Role(stored.role), frozenset(stored.domains), stored.id)

    async def create(
        self, domains: Iterable[str], label: str = "", expires_in: float | None = None
    ) -> tuple[AdminToken, str]:
        """A domain-admin token for ``domains`` (local domains; raises NotFound otherwise,
        InvalidAddress for a bad name). Returns the record and the token, which is not
        stored and cannot be shown again."""
        names: list[str] = []
        for raw in domains:
            name = canonical_domain(raw)
            if await self.repo.get_domain(name) is None:
                raise NotFound(f"domain {name} is not a local domain")
            if name not in names:
                names.append(name)
        if not names:
            raise ValueError("a domain-admin token needs at least one domain")
        if len(names) > MAX_TOKEN_DOMAINS:
            raise ValueError(f"a token manages at most {MAX_TOKEN_DOMAINS} domains")
        now = self._clock()
        for _ in range(3):  # 64-bit ids: a collision is a freak, but costs nothing to retry
            token_id, token = new_domain_admin_token()
            record = AdminToken(
                id=token_id,
                token_digest=token_digest(token),
                role=Role.DOMAIN_ADMIN.value,
                domains=tuple(names),
                label=label,
                created_at=now,
                expires_at=None if expires_in is None else now + expires_in,
            )
            try:
                await self.repo.add_admin_token(record)
            except AlreadyExists:
                continue
            return record, token
        raise RuntimeError("could not allocate a token id")

    async def list(self) -> list[AdminToken]:
        return await self.repo.list_admin_tokens()

    async def revoke(self, token_id: str) -> bool:
        """Effective at the caller's next request: every request looks the token up."""
        return await self.repo.delete_admin_token(token_id)
