from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from argon2 import PasswordHasher

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress
from postmesh.auth.admin_api import create_admin_app
from postmesh.auth.grpc_api import AuthServicer
from postmesh.auth.recipients import RecipientKind
from postmesh.auth.repository.sqlite import SqliteAccountRepository
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel

TOKEN = "t" * 32


@pytest.fixture
async def accounts(tmp_path: Path) -> AsyncIterator[Accounts]:
    repo = SqliteAccountRepository(tmp_path / "auth.sqlite3")
    await repo.open()
    yield Accounts(repo)
    await repo.close()


@pytest.fixture
async def admin(accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    app = create_admin_app(accounts, TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://admin",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def test_admin_creates_domain_and_user_then_password_checks(
    admin: httpx.AsyncClient, accounts: Accounts
) -> None:
    r = await admin.post("/api/v1/domains", json={"name": "Example.TEST"})
    assert r.status_code == 201 and r.json() == {"name": "example.test"}
    r = await admin.post(
        "/api/v1/users", json={"address": "Alice@Example.test", "password": "s3cret"}
    )
    assert r.status_code == 201 and r.json() == {"address": "alice@example.test"}
    stored = await accounts.repo.get_user("alice@example.test")
    assert stored is not None and stored.password_hash.startswith("$argon2id$")
    assert await accounts.authenticate("alice@example.test", "s3cret") is not None
    assert await accounts.authenticate("ALICE@example.test", "s3cret") is not None
    assert await accounts.authenticate("alice@example.test", "wrong") is None
    assert await accounts.authenticate("nobody@example.test", "s3cret") is None
    assert await accounts.authenticate("not an address", "s3cret") is None


async def test_admin_rejects_bad_input_and_missing_token(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/api/v1/domains", json={"name": "example.test"})).status_code == 201
    assert (await admin.post("/api/v1/domains", json={"name": "example.test"})).status_code == 409
    assert (await admin.post("/api/v1/domains", json={"name": "bad..name"})).status_code == 422
    assert (await admin.post("/api/v1/domains", json={})).status_code == 422
    # user of a domain we do not host, bad address, short password, duplicate
    r = await admin.post("/api/v1/users", json={"address": "a@other.test", "password": "xxxxx"})
    assert r.status_code == 422 and "not a local domain" in r.text
    r = await admin.post("/api/v1/users", json={"address": "no-at-sign", "password": "xxxxx"})
    assert r.status_code == 422
    r = await admin.post("/api/v1/users", json={"address": "a@example.test", "password": "x"})
    assert r.status_code == 422
    assert (
        await admin.post("/api/v1/users", json={"address": "a@example.test", "password": "pw12"})
    ).status_code == 201
    assert (
        await admin.post("/api/v1/users", json={"address": "a@example.test", "password": "pw12"})
    ).status_code == 409
    r = await admin.get("/api/v1/users", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await admin.get("/api/v1/users", headers={"Authorization": ""})
    assert r.status_code == 401
    assert (await admin.get("/api/v1/users")).json() == [{"address": "a@example.test"}]


async def test_resolve_recipient_kinds(accounts: Accounts) -> None:
    await accounts.create_domain("example.test")
    await accounts.create_user("bob@example.test", "pw1234")
    r = await accounts.resolve_recipient("Bob@EXAMPLE.test")
    assert r.kind is RecipientKind.LOCAL_USER and r.users == ("bob@example.test",)
    assert (await accounts.resolve_recipient("carol@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )
    assert (await accounts.resolve_recipient("x@elsewhere.test")).kind is RecipientKind.REMOTE


async def test_addresses_beyond_account_syntax_resolve_too(accounts: Accounts) -> None:
    """RFC 5321 forms no account can have are an unknown local or a remote recipient, never an
    error (the edges answered errors with a temporary failure); a quoted local part whose
    content is a dot-atom is that address (RFC 5321 §4.1.2)."""
    await accounts.create_domain("example.test")
    await accounts.create_user("bob@example.test", "pw1234")
    for quoted in ('"bob"@example.test', '"B\\ob"@Example.Test', '<"bob"@example.test>'):
        r = await accounts.resolve_recipient(quoted)
        assert r.kind is RecipientKind.LOCAL_USER and r.users == ("bob@example.test",), quoted
    long_local = "SRS0=HHH5=TT=" + "x" * 60
    for address, kind in (
        ('"a b"@example.test', RecipientKind.UNKNOWN_LOCAL),
        (f"{long_local}@example.test", RecipientKind.UNKNOWN_LOCAL),
        ('"john smith"@remote.invalid', RecipientKind.REMOTE),
        (f"{long_local}@fwd.example", RecipientKind.REMOTE),
        ("bob@[127.0.0.1]", RecipientKind.REMOTE),
        ("bob@localhost", RecipientKind.REMOTE),
    ):
        assert (await accounts.resolve_recipient(address)).kind is kind, address
    with pytest.raises(InvalidAddress):
        await accounts.resolve_recipient("no-at-sign")


async def test_grpc_authenticate_and_resolve(accounts: Accounts, tmp_path: Path) -> None:
    await accounts.create_domain("example.test")
    await accounts.create_user("bob@example.test", "pw1234")
    pki = ensure_dev_pki(tmp_path / "pki", ["auth", "smtp-edge"])
    server = GrpcServer("127.0.0.1:0", pki["auth"].security())
    server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(accounts))
    await server.start(["postmesh.api.auth.v1.AuthService"])
    try:
        ch = channel(f"127.0.0.1:{server.port}", pki["smtp-edge"].security(), "auth")
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        ok = await stub.Authenticate(
            auth_pb2.AuthenticateRequest(username="bob@example.test", password="pw1234"), timeout=10
        )
        assert ok.ok and ok.user == "bob@example.test"
        bad = await stub.Authenticate(
            auth_pb2.AuthenticateRequest(username="bob@example.test", password="nope"), timeout=10
        )
        assert not bad.ok and bad.user == ""
        r = await stub.ResolveRecipient(
            auth_pb2.ResolveRecipientRequest(address="bob@example.test"), timeout=10
        )
        assert r.kind == auth_pb2.RECIPIENT_KIND_LOCAL_USER and list(r.users) == [
            "bob@example.test"
        ]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ResolveRecipient(auth_pb2.ResolveRecipientRequest(address="@@"), timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await ch.close()
    finally:
        await server.stop(0)


async def test_a_password_matches_in_any_unicode_form(accounts: Accounts) -> None:
    """SASLprep (RFC 4013), as SCRAM's (RFC 5802 §2.2): PLAIN and USER/PASS accept the password
    in NFD, or with characters SASLprep maps to nothing, like SCRAM-SHA-256 does."""
    nfc = "caf\u00e9-p\u00e4ssword"
    await accounts.create_domain("example.test")
    await accounts.create_user("utf@example.test", nfc)
    for typed in (nfc, "cafe\u0301-pa\u0308ssword", "caf\u00e9-p\u00e4ss\u00adword"):
        assert await accounts.authenticate("utf@example.test", typed) is not None, typed
    assert await accounts.authenticate("utf@example.test", "cafe-password") is None
    # A hash made before passwords were prepared (of the password as typed) still matches.
    await accounts.create_user("old@example.test", "placeholder")
    legacy = PasswordHasher().hash("cafe\u0301")
    await accounts.repo.set_password_hash("old@example.test", legacy)
    assert await accounts.authenticate("old@example.test", "cafe\u0301") is not None
