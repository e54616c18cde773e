"""The admin API's authentication and role checks as FastAPI dependencies: no or a bad token is
a 401, a valid token without the right is a 403 whose ``detail`` says what it lacks."""

# No "from __future__ import annotations": FastAPI resolves the annotations at runtime.

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from postmesh.auth.addresses import InvalidAddress, canonical_domain, domain_of
from postmesh.auth.admin_tokens import AdminTokens, Principal

_bearer = HTTPBearer(auto_error=False)


async def _caller(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    tokens: AdminTokens = request.app.state.admin_tokens
    principal = None if creds is None else await tokens.authenticate(creds.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


# A route parameter ``caller: Caller`` authenticates the request (401 otherwise).
Caller = Annotated[Principal, Depends(_caller)]


def forbidden(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, reason)


def require_admin(caller: Principal, action: str) -> None:
    if not caller.is_admin:
        raise forbidden(f"{action} needs the admin role; this is a {caller.role.value} token")


def require_domain(caller: Principal, domain: str) -> None:
    """``domain`` is canonical. Checked before any look-up, so a domain admin learns nothing
    about another domain (not even whether a user there exists)."""
    if not caller.may_manage(domain):
        raise forbidden(
            f"domain {domain} is not one of this token's domains"
            f" ({', '.join(sorted(caller.domains))})"
        )


def require_address(caller: Principal, canonical: str) -> None:
    require_domain(caller, domain_of(canonical))


def domain_filter(caller: Principal, domain: str | None) -> list[str] | None:
    """The domains a listing covers: None for all (the admin without ``?domain=``), else the
    one asked for (422 if invalid, 403 if not the caller's) or every domain of the caller."""
    if domain is not None:
        try:
            name = canonical_domain(domain)
        except InvalidAddress as e:
            raise HTTPException(422, str(e)) from e
        require_domain(caller, name)
        return [name]
    return None if caller.is_admin else sorted(caller.domains)
