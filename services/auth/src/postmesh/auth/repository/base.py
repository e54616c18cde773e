from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Domain:
    name: str


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One DKIM key of a domain (RFC 6376 section 3.6). Which key signs and which are published
    follows from the times alone (postmesh.auth.dkim_keys), so rotation is an insert."""

    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256" (postmesh.common.mailauth.dkim)
    # RSA: PKCS#1 PEM; Ed25519: base64 of the 32-byte seed. Never leaves auth except over
    # GetDkimKeys.
    private_key: bytes = field(repr=False)
    public_key: str  # the p= value of the TXT record
    created_at: float  # Unix time
    activates_at: float  # signs from this time on, until a newer key of its algorithm does


@dataclass(frozen=True, slots=True)
class User:
    address: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class AdminToken:
    """An issued admin API token (docs/adr/0026-admin-token-roles.md): only the SHA-256 digest
    of the token is kept, so a copy of the database grants nothing."""

    id: str  # public: listed, and the key a presented token is looked up by
    token_digest: str = field(repr=False)  # hex SHA-256 of the whole token
    role: str  # "domain-admin"
    domains: tuple[str, ...]  # canonical names the token may manage
    label: str
    created_at: float  # Unix time
    expires_at: float | None = None


class AccountRepository(ABC):
    """Names passed in are already canonical (see postmesh.auth.addresses)."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def add_domain(self, name: str, dkim_keys: Sequence[DkimKey] = ()) -> Domain:
        """The domain and its first DKIM keys, all or nothing. Raises AlreadyExists."""

    @abstractmethod
    async def get_domain(self, name: str) -> Domain | None: ...

    @abstractmethod
    async def list_domains(self) -> list[Domain]: ...

    @abstractmethod
    async def add_user(self, address: str, password_hash: str) -> User:
        """Raises NotFound if the domain is not local, AlreadyExists if the user is."""

    @abstractmethod
    async def get_user(self, address: str) -> User | None: ...

    @abstractmethod
    async def delete_user(self, address: str) -> bool:
        """Removes the user (not their mail, which the store keeps); False if there was none."""

    @abstractmethod
    async def list_users(self, domain: str | None = None) -> list[User]: ...

    @abstractmethod
    async def add_dkim_key(self, domain: str, key: DkimKey) -> None:
        """Raises NotFound if the domain is not local, AlreadyExists if the selector is taken."""

    @abstractmethod
    async def list_dkim_keys(self, domain: str) -> list[DkimKey]:
        """Every stored key of the domain, oldest first (empty for an unknown domain)."""

    @abstractmethod
    async def delete_dkim_key(self, domain: str, selector: str) -> bool:
        """False when there was no such key."""

    @abstractmethod
    async def set_password_hash(self, address: str, password_hash: str) -> None: ...

    # -- admin API tokens --
    @abstractmethod
    async def add_admin_token(self, token: AdminToken) -> None:
        """Raises AlreadyExists if the id is taken."""

    @abstractmethod
    async def get_admin_token(self, token_id: str) -> AdminToken | None: ...

    @abstractmethod
    async def list_admin_tokens(self) -> list[AdminToken]:
        """Oldest first."""

    @abstractmethod
    async def delete_admin_token(self, token_id: str) -> bool:
        """False when there was no such token."""
