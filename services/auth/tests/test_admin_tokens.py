"""Admin tokens and roles: the token contract on SQLite (the MongoDB run is in
tests/integration/test_auth_accounts_contract.py) and the admin API's role checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from postmesh.auth.accounts import Accounts
from postmesh.auth.admin_api import create_admin_app
from postmesh.auth.quotas import Quota
from postmesh.auth.records.sqlite import SqliteRecordRepository
from postmesh.auth.repository.sqlite import SqliteAccountRepository

pytest.register_assert_rewrite("postmesh.auth.repository.token_contract")

from postmesh.auth.repository.token_contract import AdminTokenContract  # noqa: E402


class TestSqliteAdminTokens(AdminTokenContract):
    @pytest.fixture
    async def repo(self, tmp_path: Path) -> AsyncIterator[SqliteAccountRepository]:
        repo = SqliteAccountRepository(tmp_path / "auth.sqlite3")
        await repo.open()
        yield repo
        await repo.close()


# --- roles over the admin API ------------------------------------------------------------------

ADMIN = "a" * 32


class MemoryQuotas:
    def __init__(self) -> None:
        self.limits: dict[str, tuple[int, int]] = {}

    async def get(self, user: str) -> Quota:
        storage, messages = self.limits.get(user, (0, 0))
        return Quota(0, storage, 0, messages)

    async def set(self, user: str, storage_limit_bytes: int, message_limit: int) -> Quota:
        self.limits[user] = (storage_limit_bytes, message_limit)
        return await self.get(user)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    repo = SqliteAccountRepository(tmp_path / "auth.sqlite3")
    records = SqliteRecordRepository(tmp_path / "auth.sqlite3")
    await repo.open()
    await records.open()
    acc = Accounts(repo, records)
    for domain in ("mine.test", "theirs.test"):
        await acc.create_domain(domain)
        await acc.create_user(f"ann@{domain}", "pw1234")
    asgi = create_admin_app(acc, ADMIN, quotas=MemoryQuotas())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi), base_url="http://admin"
    ) as client:
        yield client
    await records.close()
    await repo.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issue(app: httpx.AsyncClient, *domains: str) -> str:
    r = await app.post(
        "/api/v1/tokens", json={"domains": list(domains), "label": "t"}, headers=bearer(ADMIN)
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "domain-admin" and body["expires_at"] is None
    token: str = body["token"]
    assert token.startswith("pmda_" + body["id"] + "_")
    return token


async def test_admin_issues_lists_and_revokes_tokens(app: httpx.AsyncClient) -> None:
    token = await issue(app, "Mine.test")
    listed = (await app.get("/api/v1/tokens", headers=bearer(ADMIN))).json()
    assert [(t["domains"], t["label"]) for t in listed] == [(["mine.test"], "t")]
    assert "token" not in listed[0] and token not in json.dumps(listed)
    who = (await app.get("/api/v1/whoami", headers=bearer(token))).json()
    assert who == {"role": "domain-admin", "domains": ["mine.test"], "token_id": listed[0]["id"]}
    assert (await app.get("/api/v1/whoami", headers=bearer(ADMIN))).json() == {
        "role": "admin",
        "domains": [],
        "token_id": None,
    }
    r = await app.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=bearer(ADMIN))
    assert r.status_code == 204
    assert (await app.get("/api/v1/whoami", headers=bearer(token))).status_code == 401
    for bad_id in (listed[0]["id"], "nope", "../" * 5):
        r = await app.delete(f"/api/v1/tokens/{bad_id}", headers=bearer(ADMIN))
        assert r.status_code == 404, bad_id


@pytest.mark.parametrize(
    "body",
    [
        {"domains": ["nowhere.test"]},
        {"domains": []},
        {"domains": ["mine.test"], "role": "admin"},
        {"domains": [{"$gt": ""}]},
        {"domains": ["mine.test"], "expires_in_seconds": 0},
        {"domains": ["not a domain"]},
        {"domains": ["mine.test"], "extra": 1},
    ],
)
async def test_bad_token_requests_are_422(app: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await app.post("/api/v1/tokens", json=body, headers=bearer(ADMIN))
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert (await app.get("/api/v1/tokens", headers=bearer(ADMIN))).json() == []


async def test_domain_admin_manages_its_own_domain(app: httpx.AsyncClient) -> None:
    h = bearer(await issue(app, "mine.test"))
    assert (await app.get("/api/v1/domains", headers=h)).json() == [{"name": "mine.test"}]
    r = await app.post("/api/v1/users", json={"address": "Bob@mine.test", "password": "pw1234"}, headers=h)  # fmt: skip
    assert r.status_code == 201, r.text
    users = (await app.get("/api/v1/users", headers=h)).json()
    assert users == [{"address": "ann@mine.test"}, {"address": "bob@mine.test"}]
    assert (await app.get("/api/v1/users?domain=mine.test", headers=h)).json() == users
    ok = [
        ("POST", "/api/v1/users/bob@mine.test/disable", None),
        ("POST", "/api/v1/users/bob@mine.test/enable", None),
        ("PUT", "/api/v1/users/bob@mine.test/password", {"password": "pw5678"}),
        ("PUT", "/api/v1/users/bob@mine.test/quota", {"storage_limit_bytes": 10**6}),
        ("GET", "/api/v1/users/bob@mine.test/quota", None),
        ("POST", "/api/v1/aliases", {"address": "team@mine.test", "targets": ["bob@mine.test", "x@remote.test"]}),
        ("PUT", "/api/v1/aliases/team@mine.test", {"targets": ["ann@mine.test"]}),
        ("GET", "/api/v1/aliases/team@mine.test", None),
        ("PUT", "/api/v1/domains/mine.test/catch-all", {"target": "ann@mine.test"}),
        ("DELETE", "/api/v1/domains/mine.test/catch-all", None),
        ("GET", "/api/v1/domains/mine.test/dkim-keys", None),
        ("POST", "/api/v1/domains/mine.test/dkim-keys/rotate", {"algorithm": "ed25519-sha256"}),
        ("GET", "/api/v1/domains/mine.test/dns-records", None),
        ("DELETE", "/api/v1/aliases/team@mine.test", None),
        ("DELETE", "/api/v1/users/bob@mine.test", None),
    ]  # fmt: skip
    for method, path, body in ok:
        r = await app.request(method, path, json=body, headers=h)
        assert r.status_code < 300, (method, path, r.text)
    assert (await app.get("/api/v1/aliases", headers=h)).json() == []


async def test_domain_admin_is_refused_elsewhere_with_a_reason(app: httpx.AsyncClient) -> None:
    h = bearer(await issue(app, "mine.test"))
    refused = [
        ("POST", "/api/v1/domains", {"name": "new.test"}, "creating domains needs the admin role"),
        ("GET", "/api/v1/tokens", None, "admin role"),
        ("POST", "/api/v1/tokens", {"domains": ["theirs.test"]}, "admin role"),
        ("DELETE", "/api/v1/tokens/0123456789abcdef", None, "admin role"),
        ("POST", "/api/v1/users", {"address": "eve@theirs.test", "password": "pw1234"}, "theirs.test"),
        ("GET", "/api/v1/users?domain=theirs.test", None, "theirs.test"),
        ("GET", "/api/v1/users/ann@theirs.test", None, "theirs.test"),
        # Not even whether a user exists there: 403, never 404.
        ("GET", "/api/v1/users/nobody@theirs.test", None, "theirs.test"),
        ("GET", "/api/v1/users/nobody@unknown.test", None, "unknown.test"),
        ("POST", "/api/v1/users/ann@theirs.test/disable", None, "theirs.test"),
        ("PUT", "/api/v1/users/ANN@Theirs.Test/password", {"password": "pw5678"}, "theirs.test"),
        ("PUT", "/api/v1/users/ann@theirs.test/quota", {"storage_limit_bytes": 1}, "theirs.test"),
        ("GET", "/api/v1/users/ann@theirs.test/quota", None, "theirs.test"),
        ("DELETE", "/api/v1/users/ann@theirs.test", None, "theirs.test"),
        ("POST", "/api/v1/aliases", {"address": "x@theirs.test", "targets": ["ann@mine.test"]}, "theirs.test"),
        ("POST", "/api/v1/aliases", {"address": "x@mine.test", "targets": ["ann@theirs.test"]}, "theirs.test"),
        ("GET", "/api/v1/aliases?domain=theirs.test", None, "theirs.test"),
        ("GET", "/api/v1/aliases/x@theirs.test", None, "theirs.test"),
        ("DELETE", "/api/v1/aliases/x@theirs.test", None, "theirs.test"),
        ("PUT", "/api/v1/domains/theirs.test/catch-all", {"target": "ann@mine.test"}, "theirs.test"),
        ("PUT", "/api/v1/domains/mine.test/catch-all", {"target": "ann@theirs.test"}, "theirs.test"),
        ("GET", "/api/v1/domains/theirs.test/dkim-keys", None, "theirs.test"),
        ("POST", "/api/v1/domains/theirs.test/dkim-keys/rotate", None, "theirs.test"),
        ("GET", "/api/v1/domains/theirs.test/dns-records", None, "theirs.test"),
        ("GET", "/api/v1/domains/theirs.test/mta-sts.txt", None, "theirs.test"),
    ]  # fmt: skip
    for method, path, body, reason in refused:
        r = await app.request(method, path, json=body, headers=h)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert reason in r.json()["detail"], (method, path, r.text)
    # Nothing changed on the other domain.
    admin = bearer(ADMIN)
    assert (await app.get("/api/v1/users/ann@theirs.test", headers=admin)).json()[
        "disabled"
    ] is False
    assert (await app.get("/api/v1/aliases", headers=admin)).json() == []
    assert [d["name"] for d in (await app.get("/api/v1/domains", headers=admin)).json()] == [
        "mine.test",
        "theirs.test",
    ]
    # Validation still comes first where it must: a bad address is a 422 for anyone.
    r = await app.post("/api/v1/users", json={"address": "a b@mine.test", "password": "pw1234"}, headers=h)  # fmt: skip
    assert r.status_code == 422 and "dot-atom" in r.text


async def test_no_or_bad_token_is_401(app: httpx.AsyncClient) -> None:
    token = await issue(app, "mine.test")
    forged = token[:-4] + "AAAA" if not token.endswith("AAAA") else token[:-4] + "BBBB"
    for headers in ({}, bearer(""), bearer(forged), bearer(token + "x"), {"Authorization": token}):
        r = await app.get("/api/v1/users", headers=headers)
        assert r.status_code == 401, headers
        assert r.json() == {"detail": "missing or invalid bearer token"}
        assert r.headers["www-authenticate"] == "Bearer"


async def test_every_api_route_needs_a_token(app: httpx.AsyncClient) -> None:
    """Enumerated from the app, so a route added later without ``Caller`` fails here."""
    asgi = app._transport.app  # type: ignore[attr-defined]
    routes = [r for r in asgi.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 28
    for route in routes:
        path = route.path.replace("{address}", "ann@mine.test").replace("{name}", "mine.test")
        path = path.replace("{selector}", "s").replace("{token_id}", "0" * 16)
        for method in route.methods:
            r = await app.request(method, path, json={})
            assert r.status_code == 401, (method, route.path, r.status_code)
