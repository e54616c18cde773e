"""Account logic shared by the gRPC servicer and the admin API."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from prometheus_client import Counter

from postmesh.auth.addresses import InvalidAddress, canonical_address, canonical_domain
from postmesh.auth.aliases import Aliases
from postmesh.auth.dkim_keys import DkimKeys
from postmesh.auth.lockout import LoginGuard
from postmesh.auth.login_cache import LoginCache
from postmesh.auth.passwords import DUMMY_HASH, hash_password, needs_rehash, verify_password
from postmesh.auth.recipients import RecipientResolver, Resolution
from postmesh.auth.records import LoginState, RecordRepository
from postmesh.auth.repository import AccountRepository, Domain, NotFound, User
from postmesh.auth.resolution_cache import ResolutionCache
from postmesh.auth.shared_checks import SharedChecks
from postmesh.common.logging import get_logger, kv
from postmesh.common.sasl import scram
from postmesh.common.sasl.saslprep import SaslPrepError

log = get_logger(__name__)

AUTH_ATTEMPTS = Counter(
    "postmesh_auth_attempts_total",
    "Password checks, by protocol and result.",
    ["protocol", "result"],
)

MIN_PASSWORD_LENGTH = 4


@dataclass(frozen=True, slots=True)
class LoginResult:
    """``user`` on success; ``retry_after`` > 0 when refused by a temporary lockout."""

    user: User | None
    retry_after: int = 0
    server_signature: bytes = b""


class Accounts:
    def __init__(
        self,
        repo: AccountRepository,
        records: RecordRepository | None = None,
        guard: LoginGuard | None = None,
        scram_iterations: int = scram.MIN_ITERATIONS,
        login_cache: LoginCache | None = None,
        dkim: DkimKeys | None = None,
        recipient_delimiter: str = "+",
        resolution_cache_seconds: float = 0.0,
        postmaster: str = "",
    ) -> None:
        """Without ``records`` (older tests and tools) there are no SCRAM keys, lockout,
        aliases or disabled accounts; the service always passes them. Resolutions are cached
        for ``resolution_cache_seconds`` at most (0: not at all; ADR 45), with ``records``."""
        self.repo = repo
        self.records = records
        self.guard = guard
        self.scram_iterations = scram_iterations
        self.login_cache = login_cache
        # Looked up at each call, so a test may count the argon2 runs (ADR 53).
        self._checks = SharedChecks(lambda stored, password: verify_password(stored, password))
        self.dkim = dkim or DkimKeys(repo)
        self.resolver = RecipientResolver(repo, records, recipient_delimiter, postmaster)
        self.resolutions = (
            ResolutionCache(records.change_stamp, resolution_cache_seconds)
            if records is not None and resolution_cache_seconds > 0
            else None
        )
        self.aliases = (
            Aliases(repo, records, self._resolutions_changed) if records is not None else None
        )

    def _resolutions_changed(self) -> None:
        if self.resolutions is not None:
            self.resolutions.forget_all()

    async def create_domain(self, name: str) -> Domain:
        """The domain with its DKIM keys (generated first, stored with the domain)."""
        canonical = canonical_domain(name)
        return await self.repo.add_domain(canonical, await self.dkim.initial_keys())

    async def _existing(self, address: str) -> str:
        canonical = canonical_address(address)
        if await self.repo.get_user(canonical) is None:
            raise NotFound(f"user {canonical} does not exist")
        return canonical

    async def is_disabled(self, address: str) -> bool:
        return await self._disabled(canonical_address(address))

    async def set_disabled(self, address: str, disabled: bool) -> None:
        """A disabled user cannot log in (any protocol, any mechanism) and receives no mail
        (550 5.2.1; alias expansion skips them); the account and mail stay. Raises NotFound."""
        if self.records is None:
            raise RuntimeError("account state needs the record repository")
        canonical = await self._existing(address)
        await self.records.set_disabled(canonical, disabled)
        self._resolutions_changed()
        if self.login_cache is not None:
            self.login_cache.forget(canonical)

    async def delete_user(self, address: str) -> None:
        """Removes the account and its credentials: logins fail and mail to the address is
        refused as unknown (550 5.1.1). The store keeps the mailboxes (docs/adr/0022)."""
        canonical = await self._existing(address)
        await self.repo.delete_user(canonical)
        self._resolutions_changed()
        if self.login_cache is not None:
            self.login_cache.forget(canonical)
        if self.records is not None:
            await self.records.set_scram(canonical, None)
            # Also replaces the change stamp: other replicas drop what they cached for it.
            await self.records.set_disabled(canonical, False)

    async def create_user(self, address: str, password: str) -> User:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        user = await self.repo.add_user(canonical_address(address), await hash_password(password))
        await self._store_scram(user.address, password)
        return user

    async def authenticate(self, username: str, password: str, protocol: str = "") -> User | None:
        return (await self.login(username, password, protocol)).user

    async def login(
        self, username: str, password: str, protocol: str = "", remote_ip: str = ""
    ) -> LoginResult:
        """Check a password, with lockout and back-off; upgrades hashes and SCRAM keys."""
        try:
            address = canonical_address(username)
        except InvalidAddress:
            address = ""
        # The account and the records the login needs (lockout counts, disabled, SCRAM keys
        # present) read at once: two trips side by side instead of six in a row (ADR 0057).
        keys = LoginGuard.keys(address, remote_ip) if self.guard is not None else []
        state: LoginState | None = None
        if self.records is not None:
            state, user = await asyncio.gather(
                self.records.login_state(address, keys), self._user(address)
            )
        else:
            user = await self._user(address)
        if self.guard is not None:
            assert state is not None  # a guard is built on the records
            retry = self.guard.retry_after_of(state.failures, address, remote_ip)
            if retry:
                AUTH_ATTEMPTS.labels(protocol or "unknown", "locked").inc()
                return LoginResult(None, retry)
        cache = self.login_cache
        if (
            user is not None
            and cache is not None
            and cache.hit(address, password, user.password_hash)
        ):
            ok = True
        else:
            # Verify even for unknown users so the answer takes as long either way.
            # Identical checks already running share its answer (ADR 53).
            ok = await self._checks.verify(user.password_hash if user else DUMMY_HASH, password)
            if (
                ok
                and user is not None
                and cache is not None
                and not needs_rehash(user.password_hash)
            ):
                cache.add(address, password, user.password_hash)
        if ok and user and await self._disabled(user.address, address, state):
            ok = False
        AUTH_ATTEMPTS.labels(protocol or "unknown", "ok" if ok and user else "fail").inc()
        if not (ok and user):
            await self._failed(address, remote_ip)
            return LoginResult(None)
        if needs_rehash(user.password_hash):
            # argon2 parameters changed (POSTMESH_AUTH_ARGON2_*): re-hash while we have it.
            await self.repo.set_password_hash(user.address, await hash_password(password))
        if self.records is not None and not await self._has_scram(user.address, address, state):
            # Users created before SCRAM keys existed get them at their next password login.
            await self._store_scram(user.address, password)
        if self.guard is not None and (
            state is None
            or user.address != address
            or state.failures.get(f"user:{address}") is not None
        ):
            # Nothing to clear when the login found no count (one a concurrent failure adds
            # meanwhile stays, ADR 0057).
            await self.guard.succeeded(user.address)
        return LoginResult(user)

    async def _user(self, address: str) -> User | None:
        return await self.repo.get_user(address) if address else None

    async def _failed(self, address: str, remote_ip: str) -> None:
        if self.guard is not None:
            delay = await self.guard.failed(address, remote_ip)
            if delay:
                await asyncio.sleep(delay)

    async def _disabled(
        self, address: str, read_for: str = "", state: LoginState | None = None
    ) -> bool:
        """``state``: the records read for ``read_for`` (answers for that address only)."""
        if state is not None and address == read_for:
            return state.disabled
        return self.records is not None and await self.records.is_disabled(address)

    async def _has_scram(self, address: str, read_for: str, state: LoginState | None) -> bool:
        if state is not None and address == read_for:
            return state.has_scram
        return self.records is not None and await self.records.get_scram(address) is not None

    async def _store_scram(self, address: str, password: str) -> None:
        if self.records is None:
            return
        try:
            keys = await asyncio.to_thread(scram.new_keys, password, self.scram_iterations)
        except SaslPrepError as e:
            # Such a password still works over PLAIN/LOGIN; SCRAM clients cannot derive it.
            log.info("no SCRAM keys for password", extra=kv(user=address, reason=str(e)))
            keys = None
        await self.records.set_scram(address, keys)

    async def change_password(self, address: str, password: str) -> None:
        """New argon2 hash and new SCRAM keys; raises NotFound for an unknown user."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        canonical = await self._existing(address)
        await self.repo.set_password_hash(canonical, await hash_password(password))
        if self.login_cache is not None:
            self.login_cache.forget(canonical)
        await self._store_scram(canonical, password)

    # -- SCRAM-SHA-256: the edge runs the exchange, the keys stay here (ADR 0019) --
    async def _decoy_secret(self) -> bytes:
        assert self.records is not None
        return await self.records.secret("scram-decoy", secrets.token_bytes(32))

    async def scram_params(
        self, username: str, remote_ip: str = ""
    ) -> tuple[scram.ScramParams | None, int]:
        """(salt and iterations, 0), or (None, retry_after) when locked out. Unknown users and
        users without keys get a stable decoy salt, so the answer reveals nothing."""
        try:
            address = canonical_address(username)
        except InvalidAddress:
            address = ""
        if self.guard is not None:
            retry = await self.guard.retry_after(address, remote_ip)
            if retry:
                return None, retry
        keys = await self.records.get_scram(address) if self.records and address else None
        if keys is not None:
            return scram.ScramParams(keys.salt, keys.iterations), 0
        if self.records is None:
            return scram.decoy_params(b"no-records", username, self.scram_iterations), 0
        return scram.decoy_params(await self._decoy_secret(), username, self.scram_iterations), 0

    async def verify_scram(
        self,
        username: str,
        auth_message: bytes,
        proof: bytes,
        protocol: str = "",
        remote_ip: str = "",
    ) -> LoginResult:
        try:
            address = canonical_address(username)
        except InvalidAddress:
            address = ""
        if self.guard is not None:
            retry = await self.guard.retry_after(address, remote_ip)
            if retry:
                AUTH_ATTEMPTS.labels(protocol or "unknown", "locked").inc()
                return LoginResult(None, retry)
        user = await self.repo.get_user(address) if address else None
        keys = await self.records.get_scram(address) if self.records and user else None
        signature = scram.verify_proof(keys, auth_message, proof) if keys else None
        if signature is not None and user is not None and await self._disabled(user.address):
            signature = None
        ok = signature is not None and user is not None
        AUTH_ATTEMPTS.labels(protocol or "unknown", "ok" if ok else "fail").inc()
        if not ok or user is None or signature is None:
            await self._failed(address, remote_ip)
            return LoginResult(None)
        if self.guard is not None:
            await self.guard.succeeded(user.address)
        return LoginResult(user, server_signature=signature)

    async def resolve_recipient(self, address: str) -> Resolution:
        """Raises InvalidAddress for a syntactically invalid address."""
        if self.resolutions is None:
            return await self.resolver.resolve(address)
        return await self.resolutions.resolve(address, self.resolver.resolve)
