"""Admin API routes that run a company's accounts: user state, password, quota and deletion;
aliases; per-domain catch-alls (docs/operations.md "Admin API", docs/adr/0022)."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress, canonical_address, canonical_domain
from postmesh.auth.aliases import MAX_ALIAS_TARGETS, Aliases, InvalidTarget
from postmesh.auth.quotas import Quota, Quotas, QuotaUnavailable
from postmesh.auth.records import Alias
from postmesh.auth.repository import AlreadyExists, NotFound

# An address field: a JSON string of at most 254 octets' worth of characters (RFC 5321
# §4.5.3.1.3); anything else (object, array, number) is a 422 before any code runs.
Address = Field(min_length=3, max_length=254)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserState(BaseModel):
    address: str
    disabled: bool


class PasswordIn(_In):
    password: str = Field(min_length=1, max_length=1024)


class QuotaIn(_In):
    # 0 means unlimited (RFC 9208 STORAGE in bytes here, MESSAGE as a count).
    storage_limit_bytes: int = Field(ge=0, le=2**63 - 1, strict=True)
    message_limit: int = Field(default=0, ge=0, le=2**63 - 1, strict=True)


class QuotaOut(BaseModel):
    storage_used_bytes: int
    storage_limit_bytes: int
    messages_used: int
    message_limit: int


class AliasIn(_In):
    address: str = Address
    targets: list[str] = Field(min_length=1, max_length=MAX_ALIAS_TARGETS)


class AliasTargetsIn(_In):
    targets: list[str] = Field(min_length=1, max_length=MAX_ALIAS_TARGETS)


class AliasOut(BaseModel):
    address: str
    targets: list[str]


class CatchAllIn(_In):
    target: str = Address


class CatchAllOut(BaseModel):
    domain: str
    target: str


def _alias_out(a: Alias) -> AliasOut:
    return AliasOut(address=a.address, targets=list(a.targets))


def _address(raw: str) -> str:
    try:
        return canonical_address(raw)
    except InvalidAddress as e:
        raise HTTPException(422, str(e)) from e


def _domain(raw: str) -> str:
    try:
        return canonical_domain(raw)
    except InvalidAddress as e:
        raise HTTPException(422, str(e)) from e


def _check_targets(targets: list[str]) -> None:
    for t in targets:
        if not 3 <= len(t) <= 254:
            raise HTTPException(422, f"target {t[:64]!r}: an address has 3 to 254 characters")


def add_account_routes(
    app: FastAPI, accounts: Accounts, auth: Sequence[Any], quotas: Quotas | None
) -> None:
    deps = list(auth)

    def aliases() -> Aliases:
        if accounts.aliases is None:
            raise HTTPException(503, "aliases need the record repository")
        return accounts.aliases

    async def existing_user(raw: str) -> str:
        address = _address(raw)
        if await accounts.repo.get_user(address) is None:
            raise HTTPException(404, f"user {address} does not exist")
        return address

    # -- users --
    @app.get("/api/v1/users/{address}", dependencies=deps)
    async def get_user(address: str) -> UserState:
        canonical = await existing_user(address)
        return UserState(address=canonical, disabled=await accounts.is_disabled(canonical))

    @app.post("/api/v1/users/{address}/disable", dependencies=deps)
    async def disable_user(address: str) -> UserState:
        """Logins (IMAP, POP3, SMTP AUTH; any mechanism) fail and mail to the user is refused
        with 550 5.2.1; the account, its mail and its aliases stay."""
        canonical = await existing_user(address)
        await accounts.set_disabled(canonical, True)
        return UserState(address=canonical, disabled=True)

    @app.post("/api/v1/users/{address}/enable", dependencies=deps)
    async def enable_user(address: str) -> UserState:
        canonical = await existing_user(address)
        await accounts.set_disabled(canonical, False)
        return UserState(address=canonical, disabled=False)

    @app.put("/api/v1/users/{address}/password", status_code=204, dependencies=deps)
    async def change_password(address: str, body: PasswordIn) -> None:
        """New argon2 hash and SCRAM keys, effective at the next login on every protocol."""
        canonical = await existing_user(address)
        try:
            await accounts.change_password(canonical, body.password)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    @app.get("/api/v1/users/{address}/quota", dependencies=deps)
    async def get_quota(address: str) -> QuotaOut:
        canonical = await existing_user(address)
        if quotas is None:
            raise HTTPException(503, "no store connection for quotas")
        try:
            q = await quotas.get(canonical)
        except QuotaUnavailable as e:
            raise HTTPException(503, str(e)) from e
        return _quota_out(q)

    @app.put("/api/v1/users/{address}/quota", dependencies=deps)
    async def set_quota(address: str, body: QuotaIn) -> QuotaOut:
        """Limits enforced by the store at delivery and APPEND (over quota: 552 5.2.2)."""
        canonical = await existing_user(address)
        if quotas is None:
            raise HTTPException(503, "no store connection for quotas")
        try:
            q = await quotas.set(canonical, body.storage_limit_bytes, body.message_limit)
        except QuotaUnavailable as e:
            raise HTTPException(503, str(e)) from e
        return _quota_out(q)

    @app.delete("/api/v1/users/{address}", status_code=204, dependencies=deps)
    async def delete_user(address: str) -> None:
        """The account and its credentials go: logins fail, mail to it is refused (550 5.1.1)
        and aliases skip it. Its mailboxes stay in the store; a user created later with the
        same address sees them (delete the mail over IMAP first if that must not happen)."""
        canonical = await existing_user(address)
        try:
            await accounts.delete_user(canonical)
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    # -- aliases --
    @app.post("/api/v1/aliases", status_code=201, dependencies=deps)
    async def create_alias(body: AliasIn) -> AliasOut:
        _check_targets(body.targets)
        try:
            return _alias_out(await aliases().create(body.address, body.targets))
        except (InvalidAddress, InvalidTarget, NotFound) as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e

    @app.get("/api/v1/aliases", dependencies=deps)
    async def list_aliases(domain: str | None = None) -> list[AliasOut]:
        try:
            return [_alias_out(a) for a in await aliases().list(domain)]
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e

    @app.get("/api/v1/aliases/{address}", dependencies=deps)
    async def get_alias(address: str) -> AliasOut:
        alias = await aliases().get(_address(address))
        if alias is None:
            raise HTTPException(404, f"alias {_address(address)} does not exist")
        return _alias_out(alias)

    @app.put("/api/v1/aliases/{address}", dependencies=deps)
    async def replace_alias(address: str, body: AliasTargetsIn) -> AliasOut:
        _check_targets(body.targets)
        canonical = _address(address)
        try:
            return _alias_out(await aliases().replace(canonical, body.targets))
        except (InvalidAddress, InvalidTarget) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    @app.delete("/api/v1/aliases/{address}", status_code=204, dependencies=deps)
    async def delete_alias(address: str) -> None:
        canonical = _address(address)
        if not await aliases().delete(canonical):
            raise HTTPException(404, f"alias {canonical} does not exist")

    # -- catch-all --
    @app.get("/api/v1/domains/{name}/catch-all", dependencies=deps)
    async def get_catch_all(name: str) -> CatchAllOut:
        domain = _domain(name)
        target = await aliases().get_catch_all(domain)
        if target is None:
            raise HTTPException(404, f"domain {domain} has no catch-all")
        return CatchAllOut(domain=domain, target=target)

    @app.put("/api/v1/domains/{name}/catch-all", dependencies=deps)
    async def set_catch_all(name: str, body: CatchAllIn) -> CatchAllOut:
        """Mail to a local part of ``name`` that no user, alias or user+tag matches goes to
        ``target`` (a local user or alias, or a remote address)."""
        domain = _domain(name)
        try:
            target = await aliases().set_catch_all(domain, body.target)
        except (InvalidAddress, InvalidTarget) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e
        return CatchAllOut(domain=domain, target=target)

    @app.delete("/api/v1/domains/{name}/catch-all", status_code=204, dependencies=deps)
    async def delete_catch_all(name: str) -> None:
        domain = _domain(name)
        if not await aliases().delete_catch_all(domain):
            raise HTTPException(404, f"domain {domain} has no catch-all")


def _quota_out(q: Quota) -> QuotaOut:
    return QuotaOut(
        storage_used_bytes=q.storage_used_bytes,
        storage_limit_bytes=q.storage_limit_bytes,
        messages_used=q.messages_used,
        message_limit=q.message_limit,
    )
