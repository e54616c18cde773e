from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass

from postmesh.common.sasl.scram import ScramKeys


@dataclass(frozen=True, slots=True)
class FailureCount:
    """Failed logins for one key ("user:<address>" or "ip:<address>") in the current window."""

    failures: int
    locked_until: float


@dataclass(frozen=True, slots=True)
class LoginState:
    """What a password login reads of the records, read together (ADR 0057): the failure
    counts of its lockout keys (None where there is none), whether the account is disabled,
    whether it has SCRAM keys."""

    failures: dict[str, FailureCount | None]
    disabled: bool
    has_scram: bool


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

    async def login_state(self, address: str, failure_keys: list[str]) -> LoginState:
        """The records a password login reads, in as few trips as the backend allows; this
        default asks for them at once, one call each."""
        counts, disabled, scram = await asyncio.gather(
            asyncio.gather(*(self.get_failures(k) for k in failure_keys)),
            self.is_disabled(address) if address else _false(),
            self.get_scram(address) if address else _none(),
        )
        return LoginState(dict(zip(failure_keys, counts, strict=True)), disabled, scram is not None)

    # -- what recipients resolve to (docs/adr/0045) --
    @abstractmethod
    async def change_stamp(self) -> str:
        """A value that every write of an alias, catch-all or account state (above) replaces
        with a new one, after or with the write: replicas that cached resolutions compare it
        to the one they cached under. "" before the first such write."""


async def _false() -> bool:
    return False


async def _none() -> None:
    return None
