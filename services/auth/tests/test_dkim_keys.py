from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.dkim_keys import DkimKeys, KeyInUse, KeyState, KeyView
from postmesh.auth.grpc_api import AuthServicer
from postmesh.auth.repository import NotFound
from postmesh.auth.repository.sqlite import SqliteAccountRepository
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
        DkimKeys(repo, rotation_activation_seconds=DAY, retired_grace_seconds=7 * DAY, clock=clock),
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
        accounts = Accounts(repo, DkimKeys(repo, ed25519=False))
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


async def test_rotate_one_algorithm_at_once(accounts: Accounts) -> None:
    await accounts.create_domain("example.test")
    before = await accounts.dkim.active("example.test")
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


async def test_grpc_get_dkim_keys(accounts: Accounts) -> None:
    await accounts.create_domain("example.test")
    active = await accounts.dkim.active("example.test")
    server = GrpcServer("127.0.0.1:0")
    server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(accounts))
    await server.start(["postmesh.api.auth.v1.AuthService"])
    try:
        ch = channel(f"127.0.0.1:{server.port}")
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
