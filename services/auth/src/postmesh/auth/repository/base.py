from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Domain:
    name: str


@dataclass(frozen=True, slots=True)
class User:
    address: str
    password_hash: str


class AccountRepository(ABC):
    """Names passed in are already canonical (see postmesh.auth.addresses)."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def add_domain(self, name: str) -> Domain: ...

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
    async def list_users(self, domain: str | None = None) -> list[User]: ...

    @abstractmethod
    async def set_password_hash(self, address: str, password_hash: str) -> None: ...
