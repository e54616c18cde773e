"""Admin REST API (FastAPI) behind a bearer token: domains and users."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

import hmac
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress
from postmesh.auth.repository import AlreadyExists, NotFound


class DomainIn(BaseModel):
    name: str = Field(min_length=1, max_length=253)


class DomainOut(BaseModel):
    name: str


class UserIn(BaseModel):
    address: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    address: str


def create_admin_app(accounts: Accounts, token: str) -> FastAPI:
    app = FastAPI(title="Postmesh admin API", version="1")
    bearer = HTTPBearer(auto_error=False)

    def require_token(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(require_token)]

    @app.post("/api/v1/domains", status_code=201, dependencies=auth)
    async def create_domain(body: DomainIn) -> DomainOut:
        try:
            d = await accounts.create_domain(body.name)
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e
        return DomainOut(name=d.name)

    @app.get("/api/v1/domains", dependencies=auth)
    async def list_domains() -> list[DomainOut]:
        return [DomainOut(name=d.name) for d in await accounts.repo.list_domains()]

    @app.post("/api/v1/users", status_code=201, dependencies=auth)
    async def create_user(body: UserIn) -> UserOut:
        try:
            u = await accounts.create_user(body.address, body.password)
        except (InvalidAddress, ValueError) as e:
            raise HTTPException(422, str(e)) from e
        except NotFound as e:
            raise HTTPException(422, str(e)) from e
        except AlreadyExists as e:
            raise HTTPException(409, str(e)) from e
        return UserOut(address=u.address)

    @app.get("/api/v1/users", dependencies=auth)
    async def list_users(domain: str | None = None) -> list[UserOut]:
        return [UserOut(address=u.address) for u in await accounts.repo.list_users(domain)]

    return app
