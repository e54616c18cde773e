from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.admin_api import create_admin_app
from postmesh.auth.dkim_keys import DkimKeys, KeyInUse, KeyState, KeyView
from postmesh.auth.dns_records import DnsPolicy
from postmesh.auth.grpc_api import AuthServicer
from postmesh.auth.repository import NotFound
from postmesh.auth.repository.sqlite import SqliteAccountRepository
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.mailauth import dkim

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def accounts(tmp_path: Path, clock: Clock) -> AsyncIterator[Accounts]:
    repo = SqliteAccountRepository(tmp_path / "auth.sqlite3")
    await repo.open()
    yield Accounts(
        repo,
        dkim=DkimKeys(
            repo, rotation_activation_seconds=DAY, retired_grace_seconds=7 * DAY, clock=clock
        ),
    )
    await repo.close()


def states(views: list[KeyView]) -> dict[str, str]:
    return {v.key.selector: v.state.value for v in views}


async def test_new_domain_gets_rsa_and_ed25519_keys(accounts: Accounts) -> None:
    await accounts.create_domain("Example.TEST")
    keys = await accounts.dkim.active("example.test")
    assert [k.algorithm for k in keys] == ["rsa-sha256", "ed25519-sha256"]
    rsa_key, ed_key = keys
    assert rsa_key.selector.startswith("rsa-") and ed_key.selector.startswith("ed-")
    assert rsa_key.private_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    # RSA 2048: a 294-byte SubjectPublicKeyInfo, base64 392 characters.
    assert len(rsa_key.public_key) == 392
    assert "PRIVATE" not in repr(rsa_key) and rsa_key.private_key.decode() not in repr(rsa_key)
    # The keys parse as signing keys.
    dkim.SigningKey(rsa_key.selector, dkim.DkimAlgorithm.RSA_SHA256, rsa_key.private_key)
    dkim.SigningKey(ed_key.selector, dkim.DkimAlgorithm.ED25519_SHA256, ed_key.private_key)


async def test_rsa_only_when_ed25519_is_off(tmp_path: Path) -> None:
    repo = SqliteAccountRepository(tmp_path / "a.sqlite3")
    await repo.open()
    try:
        accounts = Accounts(repo, dkim=DkimKeys(repo, ed25519=False))
        await accounts.create_domain("example.test")
        assert [k.algorithm for k in await accounts.dkim.active("example.test")] == ["rsa-sha256"]
    finally:
        await repo.close()


async def test_rotation_pending_then_active_then_retired_then_expired(
    accounts: Accounts, clock: Clock
) -> None:
    await accounts.create_domain("example.test")
    old = {k.algorithm: k.selector for k in await accounts.dkim.active("example.test")}
    clock.now += 10
    new_keys = await accounts.dkim.rotate("example.test")
    new = {k.algorithm: k.selector for k in new_keys}
    assert set(new) == {"rsa-sha256", "ed25519-sha256"} and not set(new.values()) & set(
        old.values()
    )
    # Published but not signing until the activation delay passed.
    s = states(await accounts.dkim.views("example.test"))
    assert {s[x] for x in old.values()} == {"active"} and {s[x] for x in new.values()} == {
        "pending"
    }
    clock.now += DAY
    assert {k.selector for k in await accounts.dkim.active("example.test")} == set(new.values())
    s = states(await accounts.dkim.views("example.test"))
    assert {s[x] for x in old.values()} == {"retired"}
    views = await accounts.dkim.views("example.test")
    assert all(v.state.published for v in views)
    clock.now += 7 * DAY
    s = states(await accounts.dkim.views("example.test"))
    assert {s[x] for x in old.values()} == {"expired"} and not KeyState.EXPIRED.published
    # The active key cannot be deleted; an expired one can, once.
    with pytest.raises(KeyInUse):
        await accounts.dkim.delete("example.test", new["rsa-sha256"])
    await accounts.dkim.delete("example.test", old["rsa-sha256"])
    with pytest.raises(NotFound):
        await accounts.dkim.delete("example.test", old["rsa-sha256"])
    assert old["rsa-sha256"] not in states(await accounts.dkim.views("example.test"))


async def test_rotate_one_algorithm_at_once(accounts: Accounts, clock: Clock) -> None:
    await accounts.create_domain("example.test")
    before = await accounts.dkim.active("example.test")
    clock.now += 1
    (key,) = await accounts.dkim.rotate(
        "example.test", dkim.DkimAlgorithm.ED25519_SHA256, activate_in_seconds=0
    )
    after = await accounts.dkim.active("example.test")
    assert [k.selector for k in after] == [before[0].selector, key.selector]
    with pytest.raises(NotFound):
        await accounts.dkim.rotate("elsewhere.test")


async def test_existing_domain_without_keys_gets_them_at_start(accounts: Accounts) -> None:
    await accounts.repo.add_domain("old.test")  # as stored before DKIM existed
    assert await accounts.dkim.active("old.test") == []
    assert await accounts.dkim.ensure_keys() == 1
    assert len(await accounts.dkim.active("old.test")) == 2
    assert await accounts.dkim.ensure_keys() == 0


async def test_grpc_get_dkim_keys(accounts: Accounts, tmp_path: Path) -> None:
    await accounts.create_domain("example.test")
    active = await accounts.dkim.active("example.test")
    pki = ensure_dev_pki(tmp_path / "pki", ["auth", "delivery"])  # mutual TLS (ADR 10)
    server = GrpcServer("127.0.0.1:0", pki["auth"].security())
    server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(accounts))
    await server.start(["postmesh.api.auth.v1.AuthService"])
    try:
        ch = channel(f"127.0.0.1:{server.port}", pki["delivery"].security(), "auth")
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        r = await stub.GetDkimKeys(auth_pb2.GetDkimKeysRequest(domain="EXAMPLE.test."), timeout=10)
        assert r.local_domain and r.domain == "example.test"
        assert [(k.selector, k.algorithm, k.private_key) for k in r.keys] == [
            (active[0].selector, auth_pb2.DKIM_ALGORITHM_RSA_SHA256, active[0].private_key),
            (active[1].selector, auth_pb2.DKIM_ALGORITHM_ED25519_SHA256, active[1].private_key),
        ]
        r = await stub.GetDkimKeys(auth_pb2.GetDkimKeysRequest(domain="other.test"), timeout=10)
        assert not r.local_domain and not r.keys and r.domain == "other.test"
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetDkimKeys(auth_pb2.GetDkimKeysRequest(domain="bad..name"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await ch.close()
    finally:
        await server.stop(0)


TOKEN = "t" * 32


@pytest.fixture
async def admin(accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    policy = DnsPolicy(mx_host="mx.example.net")
    app = create_admin_app(accounts, TOKEN, policy)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://admin",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def test_dns_records_shape(admin: httpx.AsyncClient, accounts: Accounts) -> None:
    assert (await admin.post("/api/v1/domains", json={"name": "example.test"})).status_code == 201
    r = await admin.get("/api/v1/domains/Example.Test/dns-records")
    assert r.status_code == 200
    records = r.json()
    assert all(set(rec) <= {"name", "type", "value", "note"} for rec in records)
    by_name = {(rec["name"], rec["type"]): rec["value"] for rec in records}
    active = await accounts.dkim.active("example.test")
    for k in active:
        kind = "rsa" if k.algorithm == "rsa-sha256" else "ed25519"
        assert by_name[(f"{k.selector}._domainkey.example.test", "TXT")] == (
            f"v=DKIM1; k={kind}; p={k.public_key}"
        )
    assert by_name[("example.test", "MX")] == "10 mx.example.net"
    txt = [
        rec["value"] for rec in records if rec["name"] == "example.test" and rec["type"] == "TXT"
    ]
    assert txt == ["v=spf1 mx -all"]
    assert by_name[("_dmarc.example.test", "TXT")] == (
        "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"
    )
    sts = by_name[("_mta-sts.example.test", "TXT")]
    assert re.fullmatch(r"v=STSv1; id=[0-9a-f]{20}", sts)
    assert by_name[("mta-sts.example.test", "CNAME")] == "mx.example.net"
    assert by_name[("_smtp._tls.example.test", "TXT")] == (
        "v=TLSRPTv1; rua=mailto:postmaster@example.test"
    )
    policy = await admin.get("/api/v1/domains/example.test/mta-sts.txt")
    assert policy.text == (
        "version: STSv1\r\nmode: testing\r\nmx: mx.example.net\r\nmax_age: 604800\r\n"
    )
    assert (await admin.get("/api/v1/domains/other.test/dns-records")).status_code == 404
    assert (await admin.get("/api/v1/domains/bad..name/dns-records")).status_code == 422
    r = await admin.get("/api/v1/domains/example.test/dns-records", headers={"Authorization": ""})
    assert r.status_code == 401


async def test_rotation_over_rest_keeps_old_selector_published(
    admin: httpx.AsyncClient, accounts: Accounts, clock: Clock
) -> None:
    await admin.post("/api/v1/domains", json={"name": "example.test"})
    keys = (await admin.get("/api/v1/domains/example.test/dkim-keys")).json()
    assert sorted((k["algorithm"], k["state"]) for k in keys) == [
        ("ed25519-sha256", "active"),
        ("rsa-sha256", "active"),
    ]
    old = {k["algorithm"]: k["selector"] for k in keys}
    clock.now += 1
    r = await admin.post(
        "/api/v1/domains/example.test/dkim-keys/rotate",
        json={"algorithm": "rsa-sha256", "activate_in_seconds": 0},
    )
    assert r.status_code == 201
    (new,) = r.json()
    assert new["algorithm"] == "rsa-sha256" and new["state"] == "active"
    assert new["selector"] != old["rsa-sha256"]
    keys = {
        k["selector"]: k for k in (await admin.get("/api/v1/domains/example.test/dkim-keys")).json()
    }
    assert keys[old["rsa-sha256"]]["state"] == "retired"
    assert keys[old["rsa-sha256"]]["superseded_at"] is not None
    names = {
        rec["name"] for rec in (await admin.get("/api/v1/domains/example.test/dns-records")).json()
    }
    assert f"{old['rsa-sha256']}._domainkey.example.test" in names
    assert f"{new['selector']}._domainkey.example.test" in names
    # Signing switched at once.
    assert next(k.selector for k in await accounts.dkim.active("example.test")) == new["selector"]
    # Default rotation (both algorithms) waits for the activation delay.
    r = await admin.post("/api/v1/domains/example.test/dkim-keys/rotate")
    assert r.status_code == 201 and {k["state"] for k in r.json()} == {"pending"}
    assert len(r.json()) == 2
    # Deleting: the active key is refused, a retired one goes and leaves dns-records.
    r = await admin.delete(f"/api/v1/domains/example.test/dkim-keys/{new['selector']}")
    assert r.status_code == 409
    r = await admin.delete(f"/api/v1/domains/example.test/dkim-keys/{old['rsa-sha256']}")
    assert r.status_code == 204
    r = await admin.delete(f"/api/v1/domains/example.test/dkim-keys/{old['rsa-sha256']}")
    assert r.status_code == 404
    names = {
        rec["name"] for rec in (await admin.get("/api/v1/domains/example.test/dns-records")).json()
    }
    assert f"{old['rsa-sha256']}._domainkey.example.test" not in names
    # Bad input.
    bad = [
        {"algorithm": "rsa-sha1"},
        {"activate_in_seconds": -1},
        {"activate_in_seconds": "soon"},
    ]
    for body in bad:
        r = await admin.post("/api/v1/domains/example.test/dkim-keys/rotate", json=body)
        assert r.status_code == 422, body
    r = await admin.post("/api/v1/domains/other.test/dkim-keys/rotate")
    assert r.status_code == 404
    # An expired key leaves dns-records but stays listed until deleted.
    clock.now += 30 * DAY
    await admin.post(
        "/api/v1/domains/example.test/dkim-keys/rotate", json={"activate_in_seconds": 0}
    )
    clock.now += 30 * DAY
    states_now = [
        k["state"] for k in (await admin.get("/api/v1/domains/example.test/dkim-keys")).json()
    ]
    assert states_now.count("active") == 2 and "expired" in states_now


async def test_private_keys_never_in_rest_responses(
    admin: httpx.AsyncClient, accounts: Accounts
) -> None:
    bodies = [(await admin.post("/api/v1/domains", json={"name": "example.test"})).text]
    r = await admin.post(
        "/api/v1/domains/example.test/dkim-keys/rotate", json={"activate_in_seconds": 0}
    )
    bodies.append(r.text)
    for path in (
        "/api/v1/domains",
        "/api/v1/domains/example.test/dkim-keys",
        "/api/v1/domains/example.test/dns-records",
        "/openapi.json",
    ):
        bodies.append((await admin.get(path)).text)
    stored = await accounts.repo.list_dkim_keys("example.test")
    assert len(stored) == 4
    for body in bodies:
        assert "PRIVATE" not in body and "private_key" not in body
        for k in stored:
            # The Ed25519 seed, or a PEM line of the RSA key's private part (its first lines
            # hold the modulus, which the public key shares).
            lines = k.private_key.decode().splitlines()
            secret = [ln for ln in lines if len(ln) >= 40 and ln not in k.public_key]
            assert secret and all(ln not in body for ln in secret)
