"""Admin API routes that run a company's accounts: user state, password, quota and deletion;
aliases; per-domain catch-alls (docs/operations.md "Admin API", docs/adr/0022). A domain admin
reaches only addresses of its own domains, and may not point an alias or catch-all at a user of
another local domain (docs/adr/0026-admin-token-roles.md)."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import (
    InvalidAddress,
    canonical_address,
    canonical_domain,
    domain_of,
    remote_address,
)
from postmesh.auth.admin_roles import Caller, domain_filter, require_address, require_domain
from postmesh.auth.admin_tokens import Principal
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


def add_account_routes(app: FastAPI, accounts: Accounts, quotas: Quotas | None) -> None:
    def aliases() -> Aliases:
        if accounts.aliases is None:
            raise HTTPException(503, "aliases need the record repository")
        return accounts.aliases

    async def existing_user(raw: str, caller: Principal) -> str:
        address = _address(raw)
        require_address(caller, address)
        if await accounts.repo.get_user(address) is None:
            raise HTTPException(404, f"user {address} does not exist")
        return address

    async def targets_in_scope(caller: Principal, targets: list[str]) -> None:
        """A domain admin's targets: its own domains or remote ones, never another tenant's
        users (which would also tell it who exists there). Bad syntax is left to Aliases."""
        if caller.is_admin:
            return
        for t in targets:
            try:
                domain = domain_of(remote_address(t))
            except InvalidAddress:
                continue
            if not caller.may_manage(domain) and await accounts.repo.get_domain(domain):
                require_domain(caller, domain)

    # -- users --
    @app.get("/api/v1/users/{address}")
    async def get_user(caller: Caller, address: str) -> UserState:
        canonical = await existing_user(address, caller)
        return UserState(address=canonical, disabled=await accounts.is_disabled(canonical))

    @app.post("/api/v1/users/{address}/disable")
    async def disable_user(caller: Caller, address: str) -> UserState:
        """Logins (IMAP, POP3, SMTP AUTH; any mechanism) fail and mail to the user is refused
        with 550 5.2.1; the account, its mail and its aliases stay."""
        canonical = await existing_user(address, caller)
        await accounts.set_disabled(canonical, True)
        return UserState(address=canonical, disabled=True)

    @app.post("/api/v1/users/{address}/enable")
    async def enable_user(caller: Caller, address: str) -> UserState:
        canonical = await existing_user(address, caller)
        await accounts.set_disabled(canonical, False)
        return UserState(address=canonical, disabled=False)

    @app.put("/api/v1/users/{address}/password", status_code=204)
    async def change_password(caller: Caller, address: str, body: PasswordIn) -> None:
        """New argon2 hash and SCRAM keys, effective at the next login on every protocol."""
        canonical = await existing_user(address, caller)
        try:
            await accounts.change_password(canonical, body.password)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    @app.get("/api/v1/users/{address}/quota")
    async def get_quota(caller: Caller, address: str) -> QuotaOut:
        canonical = await existing_user(address, caller)
        if quotas is None:
            raise HTTPException(503, "no store connection for quotas")
        try:
            q = await quotas.get(canonical)
        except QuotaUnavailable as e:
            raise HTTPException(503, str(e)) from e
        return _quota_out(q)

    @app.put("/api/v1/users/{address}/quota")
    async def set_quota(caller: Caller, address: str, body: QuotaIn) -> QuotaOut:
        """Limits enforced by the store at delivery and APPEND (over quota: 552 5.2.2)."""
        canonical = await existing_user(address, caller)
        if quotas is None:
            raise HTTPException(503, "no store connection for quotas")
        try:
            q = await quotas.set(canonical, body.storage_limit_bytes, body.message_limit)
        except QuotaUnavailable as e:
            raise HTTPException(503, str(e)) from e
        return _quota_out(q)

    @app.delete("/api/v1/users/{address}", status_code=204)
    async def delete_user(caller: Caller, address: str) -> None:
        """The account and its credentials go: logins fail, mail to it is refused (550 5.1.1)
        and aliases skip it. Its mailboxes stay in the store; a user created later with the
        same address sees them (delete the mail over IMAP first if that must not happen)."""
        canonical = await existing_user(address, caller)
        try:
            await accounts.delete_user(canonical)
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    # -- aliases --
    @app.post("/api/v1/aliases", status_code=201)
    async def create_alias(caller: Caller, body: AliasIn) -> AliasOut:
        _check_targets(body.targets)
        require_address(caller, _address(body.address))
        await targets_in_scope(caller, body.targets)
        try:
            return _alias_out(await aliases().create(body.address, body.targets))
        except (InvalidAddress, InvalidTarget, NotFound) as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e

    @app.get("/api/v1/aliases")
    async def list_aliases(caller: Caller, domain: str | None = None) -> list[AliasOut]:
        names = domain_filter(caller, domain)
        if names is None:
            return [_alias_out(a) for a in await aliases().list()]
        return [_alias_out(a) for n in names for a in await aliases().list(n)]

    @app.get("/api/v1/aliases/{address}")
    async def get_alias(caller: Caller, address: str) -> AliasOut:
        canonical = _address(address)
        require_address(caller, canonical)
        alias = await aliases().get(canonical)
        if alias is None:
            raise HTTPException(404, f"alias {canonical} does not exist")
        return _alias_out(alias)

    @app.put("/api/v1/aliases/{address}")
    async def replace_alias(caller: Caller, address: str, body: AliasTargetsIn) -> AliasOut:
        _check_targets(body.targets)
        canonical = _address(address)
        require_address(caller, canonical)
        await targets_in_scope(caller, body.targets)
        try:
            return _alias_out(await aliases().replace(canonical, body.targets))
        except (InvalidAddress, InvalidTarget) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e

    @app.delete("/api/v1/aliases/{address}", status_code=204)
    async def delete_alias(caller: Caller, address: str) -> None:
        canonical = _address(address)
        require_address(caller, canonical)
        if not await aliases().delete(canonical):
            raise HTTPException(404, f"alias {canonical} does not exist")

    # -- catch-all --
    @app.get("/api/v1/domains/{name}/catch-all")
    async def get_catch_all(caller: Caller, name: str) -> CatchAllOut:
        domain = _domain(name)
        require_domain(caller, domain)
        target = await aliases().get_catch_all(domain)
        if target is None:
            raise HTTPException(404, f"domain {domain} has no catch-all")
        return CatchAllOut(domain=domain, target=target)

    @app.put("/api/v1/domains/{name}/catch-all")
    async def set_catch_all(caller: Caller, name: str, body: CatchAllIn) -> CatchAllOut:
        """Mail to a local part of ``name`` that no user, alias or user+tag matches goes to
        ``target`` (a local user or alias, or a remote address)."""
        domain = _domain(name)
        require_domain(caller, domain)
        await targets_in_scope(caller, [body.target])
        try:
            target = await aliases().set_catch_all(domain, body.target)
        except (InvalidAddress, InvalidTarget) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(404, str(e)) from e
        return CatchAllOut(domain=domain, target=target)

    @app.delete("/api/v1/domains/{name}/catch-all", status_code=204)
    async def delete_catch_all(caller: Caller, name: str) -> None:
        domain = _domain(name)
        require_domain(caller, domain)
        if not await aliases().delete_catch_all(domain):
            raise HTTPException(404, f"domain {domain} has no catch-all")


def _quota_out(q: Quota) -> QuotaOut:
    return QuotaOut(
        storage_used_bytes=q.storage_used_bytes,
        storage_limit_bytes=q.storage_limit_bytes,
        messages_used=q.messages_used,
        message_limit=q.message_limit,
    )
