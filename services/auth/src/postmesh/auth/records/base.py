from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from postmesh.common.sasl.scram import ScramKeys


@dataclass(frozen=True, slots=True)
class FailureCount:
    """Failed logins for one key ("user:<address>" or "ip:<address>") in the current window."""

    failures: int
    locked_until: float


@dataclass(frozen=True, slots=True)
class Alias:
    """``address`` delivers to every one of ``targets`` (local users or remote addresses)."""

    address: str
    targets: tuple[str, ...]


class RecordRepository(ABC):
    """Addresses passed in are canonical (postmesh.auth.addresses). Every update is a single
    atomic statement or document update, so replicas sharing the backend agree."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # -- SCRAM keys (docs/adr/0019-scram-credentials.md) --
    @abstractmethod
    async def get_scram(self, address: str) -> ScramKeys | None: ...

    @abstractmethod
    async def set_scram(self, address: str, keys: ScramKeys | None) -> None: ...

    @abstractmethod
    async def secret(self, name: str, candidate: bytes) -> bytes:
        """The stored secret ``name``; stores ``candidate`` if there is none yet (first wins)."""

    # -- login failures (shared back-off and lockout) --
    @abstractmethod
    async def add_failure(self, key: str, now: float, window: float) -> int:
        """Count one failure; a window older than ``window`` seconds restarts at 1."""

    @abstractmethod
    async def lock(self, key: str, until: float) -> None: ...

    @abstractmethod
    async def get_failures(self, key: str) -> FailureCount | None: ...

    @abstractmethod
    async def clear_failures(self, key: str) -> None: ...

    # -- aliases, catch-all, account state --
    @abstractmethod
    async def set_alias(self, address: str, targets: tuple[str, ...]) -> None: ...

    @abstractmethod
    async def get_alias(self, address: str) -> Alias | None: ...

    @abstractmethod
    async def delete_alias(self, address: str) -> bool: ...

    @abstractmethod
    async def list_aliases(self, domain: str | None = None) -> list[Alias]: ...

    @abstractmethod
    async def set_catch_all(self, domain: str, target: str | None) -> None: ...

    @abstractmethod
    async def get_catch_all(self, domain: str) -> str | None: ...

    @abstractmethod
    async def set_disabled(self, address: str, disabled: bool) -> None: ...

    @abstractmethod
    async def is_disabled(self, address: str) -> bool: ...

    # -- what recipients resolve to (docs/adr/0045) --
    @abstractmethod
    async def change_stamp(self) -> str:
        """A value that every write of an alias, catch-all or account state (above) replaces
        with a new one, after or with the write: replicas that cached resolutions compare it
        to the one they cached under. "" before the first such write."""
