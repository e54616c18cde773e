"""Admin API routes for tokens: the admin issues, lists and revokes domain-admin tokens; any
valid token can ask who it is (docs/operations.md "Roles and tokens")."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

import re
from datetime import UTC, datetime
from typing import Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from postmesh.auth.addresses import InvalidAddress
from postmesh.auth.admin_roles import Caller, require_admin
from postmesh.auth.admin_tokens import MAX_TOKEN_DOMAINS, AdminTokens
from postmesh.auth.repository import AdminToken, NotFound

_TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The only role a token can be issued with: the admin token comes from the settings.
    role: Literal["domain-admin"] = "domain-admin"
    domains: list[str] = Field(min_length=1, max_length=MAX_TOKEN_DOMAINS)
    label: str = Field(default="", max_length=200)
    # Unset: valid until revoked.
    expires_in_seconds: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class TokenOut(BaseModel):
    id: str
    role: str
    domains: list[str]
    label: str
    created_at: datetime
    expires_at: datetime | None


class NewTokenOut(TokenOut):
    # Shown in this response only: auth keeps its SHA-256 digest.
    token: str


class WhoAmIOut(BaseModel):
    role: str
    # Empty for the admin, who manages every domain.
    domains: list[str]
    token_id: str | None


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _out(t: AdminToken) -> TokenOut:
    return TokenOut(
        id=t.id,
        role=t.role,
        domains=list(t.domains),
        label=t.label,
        created_at=_time(t.created_at),
        expires_at=None if t.expires_at is None else _time(t.expires_at),
    )


def add_token_routes(app: FastAPI, tokens: AdminTokens) -> None:
    @app.get("/api/v1/whoami")
    async def whoami(caller: Caller) -> WhoAmIOut:
        return WhoAmIOut(
            role=caller.role.value, domains=sorted(caller.domains), token_id=caller.token_id
        )

    @app.post("/api/v1/tokens", status_code=201)
    async def create_token(caller: Caller, body: TokenIn) -> NewTokenOut:
        """A domain-admin token for local domains; the token is in this response only."""
        require_admin(caller, "issuing tokens")
        for name in body.domains:
            if not 1 <= len(name) <= 253:
                raise HTTPException(422, f"domain {name[:64]!r}: a name has 1 to 253 characters")
        try:
            record, token = await tokens.create(body.domains, body.label, body.expires_in_seconds)
        except (InvalidAddress, ValueError, NotFound) as e:
            raise HTTPException(422, str(e)) from e
        return NewTokenOut(**_out(record).model_dump(), token=token)

    @app.get("/api/v1/tokens")
    async def list_tokens(caller: Caller) -> list[TokenOut]:
        require_admin(caller, "listing tokens")
        return [_out(t) for t in await tokens.list()]

    @app.delete("/api/v1/tokens/{token_id}", status_code=204)
    async def revoke_token(caller: Caller, token_id: str) -> None:
        """Refused from the next request on (every request looks its token up)."""
        require_admin(caller, "revoking tokens")
        if not _TOKEN_ID.match(token_id) or not await tokens.revoke(token_id):
            raise HTTPException(404, f"no token with id {token_id[:32]!r}")
