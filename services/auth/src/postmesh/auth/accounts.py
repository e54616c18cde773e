"""Account logic shared by the gRPC servicer and the admin API."""

from __future__ import annotations

from enum import Enum

from prometheus_client import Counter

from postmesh.auth.addresses import InvalidAddress, canonical_address, canonical_domain
from postmesh.auth.dkim_keys import DkimKeys
from postmesh.auth.passwords import DUMMY_HASH, hash_password, needs_rehash, verify_password
from postmesh.auth.repository import AccountRepository, Domain, User
from postmesh.common.logging import get_logger

log = get_logger(__name__)

AUTH_ATTEMPTS = Counter(
    "postmesh_auth_attempts_total",
    "Password checks, by protocol and result.",
    ["protocol", "result"],
)

MIN_PASSWORD_LENGTH = 4


class RecipientKind(Enum):
    LOCAL_USER = "local"
    UNKNOWN_LOCAL = "unknown_local"
    REMOTE = "remote"


class Accounts:
    def __init__(self, repo: AccountRepository, dkim: DkimKeys | None = None) -> None:
        self.repo = repo
        self.dkim = dkim or DkimKeys(repo)

    async def create_domain(self, name: str) -> Domain:
        """The domain with its DKIM keys (generated first, stored with the domain)."""
        canonical = canonical_domain(name)
        return await self.repo.add_domain(canonical, await self.dkim.initial_keys())

    async def create_user(self, address: str, password: str) -> User:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        return await self.repo.add_user(canonical_address(address), await hash_password(password))

    async def authenticate(self, username: str, password: str, protocol: str = "") -> User | None:
        try:
            address = canonical_address(username)
        except InvalidAddress:
            address = ""
        user = await self.repo.get_user(address) if address else None
        # Verify even for unknown users so the answer takes as long either way.
        ok = await verify_password(user.password_hash if user else DUMMY_HASH, password)
        AUTH_ATTEMPTS.labels(protocol or "unknown", "ok" if ok and user else "fail").inc()
        if not (ok and user):
            return None
        if needs_rehash(user.password_hash):
            await self.repo.set_password_hash(user.address, await hash_password(password))
        return user

    async def resolve_recipient(self, address: str) -> tuple[RecipientKind, list[str]]:
        """Raises InvalidAddress for a syntactically invalid address."""
        canonical = canonical_address(address)
        domain = canonical.rpartition("@")[2]
        if await self.repo.get_domain(domain) is None:
            return RecipientKind.REMOTE, []
        if await self.repo.get_user(canonical) is None:
            return RecipientKind.UNKNOWN_LOCAL, []
        return RecipientKind.LOCAL_USER, [canonical]
