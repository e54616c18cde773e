"""Admin REST API (FastAPI) behind bearer tokens with two roles, admin and domain admin
(postmesh.auth.admin_roles): domains, users (state, password, quota), aliases and catch-alls,
DKIM keys, DNS records, tokens. Every body is a pydantic model with
``extra="forbid"`` and plain ``str`` fields, so a JSON object or number where an address
belongs is a 422 and nothing but a validated string reaches a repository query."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

from datetime import UTC, datetime
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress, canonical_address, canonical_domain
from postmesh.auth.admin_accounts import add_account_routes
from postmesh.auth.admin_roles import (
    Caller,
    domain_filter,
    require_address,
    require_admin,
    require_domain,
)
from postmesh.auth.admin_tokens import AdminTokens, Principal
from postmesh.auth.admin_tokens_api import add_token_routes
from postmesh.auth.dkim_keys import KeyInUse, KeyView
from postmesh.auth.dns_records import DnsPolicy, dns_records, mta_sts_policy
from postmesh.auth.quotas import Quotas
from postmesh.auth.repository import AlreadyExists, NotFound
from postmesh.common.http_errors import safe_validation_errors
from postmesh.common.mailauth import dkim


class DomainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=253)


class DomainOut(BaseModel):
    name: str


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    address: str


class DkimKeyOut(BaseModel):
    # The public half and its state only: private keys never leave auth through this API.
    selector: str
    algorithm: str
    state: str
    created_at: datetime
    activates_at: datetime
    superseded_at: datetime | None
    dns_name: str
    dns_value: str


class RotateIn(BaseModel):
    # One algorithm, or (unset) every algorithm the domain signs with.
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] | None = None
    # Seconds until the new key signs; unset: POSTMESH_DKIM_ROTATION_ACTIVATION_SECONDS.
    # 0 for an immediate switch (a compromised key), after publishing the record if possible.
    activate_in_seconds: float | None = Field(default=None, ge=0, le=365 * 86400)


class DnsRecordOut(BaseModel):
    name: str
    type: str
    value: str
    note: str | None = None


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _key_out(domain: str, v: KeyView) -> DkimKeyOut:
    return DkimKeyOut(
        selector=v.key.selector,
        algorithm=v.key.algorithm,
        state=v.state.value,
        created_at=_time(v.key.created_at),
        activates_at=_time(v.key.activates_at),
        superseded_at=None if v.superseded_at is None else _time(v.superseded_at),
        dns_name=dkim.dns_name(v.key.selector, domain),
        dns_value=dkim.dns_txt_value(v.algorithm, v.key.public_key),
    )


def create_admin_app(
    accounts: Accounts,
    token: str,
    dns: DnsPolicy | None = None,
    quotas: Quotas | None = None,
) -> FastAPI:
    """``token`` is the admin token; domain-admin tokens are looked up in ``accounts.repo``."""
    app = FastAPI(title="Postmesh admin API", version="1")
    tokens = AdminTokens(accounts.repo, token)
    app.state.admin_tokens = tokens

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": safe_validation_errors(exc.errors())}, status_code=422)

    policy = dns or DnsPolicy(mx_host="localhost")

    async def local_domain(name: str, caller: Principal) -> str:
        try:
            domain = canonical_domain(name)
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e
        require_domain(caller, domain)
        if await accounts.repo.get_domain(domain) is None:
            raise HTTPException(404, f"domain {domain} is not a local domain")
        return domain

    @app.post("/api/v1/domains", status_code=201)
    async def create_domain(caller: Caller, body: DomainIn) -> DomainOut:
        require_admin(caller, "creating domains")
        try:
            d = await accounts.create_domain(body.name)
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e
        return DomainOut(name=d.name)

    @app.get("/api/v1/domains")
    async def list_domains(caller: Caller) -> list[DomainOut]:
        """Every local domain for the admin; a domain admin's own domains."""
        domains = await accounts.repo.list_domains()
        return [DomainOut(name=d.name) for d in domains if caller.may_manage(d.name)]

    @app.post("/api/v1/users", status_code=201)
    async def create_user(caller: Caller, body: UserIn) -> UserOut:
        try:
            address = canonical_address(body.address)
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e
        require_address(caller, address)
        try:
            u = await accounts.create_user(address, body.password)
        except (InvalidAddress, ValueError) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e
        return UserOut(address=u.address)

    @app.get("/api/v1/users")
    async def list_users(caller: Caller, domain: str | None = None) -> list[UserOut]:
        names = domain_filter(caller, domain)
        if names is None:
            return [UserOut(address=u.address) for u in await accounts.repo.list_users()]
        return [
            UserOut(address=u.address) for n in names for u in await accounts.repo.list_users(n)
        ]

    add_account_routes(app, accounts, quotas)
    add_token_routes(app, tokens)

    @app.get("/api/v1/domains/{name}/dkim-keys")
    async def list_dkim_keys(caller: Caller, name: str) -> list[DkimKeyOut]:
        domain = await local_domain(name, caller)
        return [_key_out(domain, v) for v in await accounts.dkim.views(domain)]

    @app.post("/api/v1/domains/{name}/dkim-keys/rotate", status_code=201)
    async def rotate_dkim_keys(
        caller: Caller, name: str, body: RotateIn | None = None
    ) -> list[DkimKeyOut]:
        """New keys under new selectors; the old ones stay published (see dns-records)."""
        domain = await local_domain(name, caller)
        body = body or RotateIn()
        algorithm = None if body.algorithm is None else dkim.DkimAlgorithm(body.algorithm)
        try:
            added = await accounts.dkim.rotate(domain, algorithm, body.activate_in_seconds)
        except NotFound as e:
            raise HTTPException(404, str(e)) from e
        selectors = {k.selector for k in added}
        views = await accounts.dkim.views(domain)
        return [_key_out(domain, v) for v in views if v.key.selector in selectors]

    @app.delete("/api/v1/domains/{name}/dkim-keys/{selector}", status_code=204)
    async def delete_dkim_key(caller: Caller, name: str, selector: str) -> None:
        domain = await local_domain(name, caller)
        try:
            await accounts.dkim.delete(domain, selector)
        except NotFound as e:
            raise HTTPException(404, str(e)) from e
        except KeyInUse as e:
            raise HTTPException(409, str(e)) from e

    @app.get("/api/v1/domains/{name}/dns-records", response_model_exclude_none=True)
    async def get_dns_records(caller: Caller, name: str) -> list[DnsRecordOut]:
        domain = await local_domain(name, caller)
        records = dns_records(domain, await accounts.dkim.views(domain), policy)
        return [DnsRecordOut(name=r.name, type=r.type, value=r.value, note=r.note) for r in records]

    @app.get("/api/v1/domains/{name}/mta-sts.txt", response_class=PlainTextResponse)
    async def get_mta_sts_policy(caller: Caller, name: str) -> str:
        """The policy file the mta-sts.<domain> host serves (RFC 8461 section 3.2)."""
        await local_domain(name, caller)
        return mta_sts_policy(policy)

    return app
