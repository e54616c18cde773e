"""SCRAM-SHA-256 credentials over gRPC, and lockout shared by replicas on one backend."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.grpc_api import AuthServicer
from postmesh.auth.lockout import LockoutPolicy, LoginGuard
from postmesh.auth.records import RecordRepository
from postmesh.auth.records.sqlite import SqliteRecordRepository
from postmesh.auth.repository.sqlite import SqliteAccountRepository
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc import GrpcServer, channel
from postmesh.common.sasl.client import ScramClient
from postmesh.common.sasl.scram import ScramSha256Mechanism
from postmesh.common.sasl.steps import Challenge, NeedScramParams, VerifyScramProof

POLICY = LockoutPolicy(account_failures=3, ip_failures=5, backoff_base_seconds=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _replica(path: Path, clock: Clock) -> Accounts:
    """One auth replica: its own connections to the shared database."""
    repo = SqliteAccountRepository(path)
    records = SqliteRecordRepository(path)
    await repo.open()
    await records.open()
    return Accounts(repo, records, LoginGuard(records, POLICY, clock))


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Accounts, Accounts, Clock]]:
    clock = Clock()
    a = await _replica(tmp_path / "auth.sqlite3", clock)
    b = await _replica(tmp_path / "auth.sqlite3", clock)
    await a.create_domain("example.test")
    await a.create_user("bob@example.test", "pencil-1")
    yield a, b, clock
    for acc in (a, b):
        assert acc.records is not None
        await acc.records.close()
        await acc.repo.close()


def _metric(name: str, scope: str) -> float:
    return REGISTRY.get_sample_value(name, {"scope": scope}) or 0.0


async def test_scram_keys_stored_at_creation_and_verified(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    accounts = replicas[0]
    assert accounts.records is not None
    keys = await accounts.records.get_scram("bob@example.test")
    assert keys is not None and keys.iterations == 4096 and len(keys.salt) == 16

    client = ScramClient("bob@example.test", "pencil-1")
    mech = ScramSha256Mechanism()
    assert mech.start(client.first()) == NeedScramParams("bob@example.test")
    params, retry = await accounts.scram_params("bob@example.test")
    assert params is not None and retry == 0 and params.salt == keys.salt
    challenge = mech.with_params(params)
    assert isinstance(challenge, Challenge)
    step = mech.respond(client.final(challenge.data))
    assert isinstance(step, VerifyScramProof)
    result = await accounts.verify_scram(step.username, step.auth_message, step.proof)
    assert result.user is not None and result.user.address == "bob@example.test"
    assert client.verify(b"v=" + base64.b64encode(result.server_signature))
    # A wrong proof fails.
    bad = await accounts.verify_scram(step.username, step.auth_message, b"\x00" * 32)
    assert bad.user is None


async def test_scram_decoy_for_unknown_user_and_password_change(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    a, b, _ = replicas
    p1, _ = await a.scram_params("nobody@example.test")
    p2, _ = await b.scram_params("nobody@example.test")
    assert p1 is not None and p1 == p2  # stable across replicas: nothing to compare
    before, _ = await a.scram_params("bob@example.test")
    await a.change_password("bob@example.test", "crayon-2")
    after, _ = await a.scram_params("bob@example.test")
    assert before != after
    assert await a.authenticate("bob@example.test", "pencil-1") is None
    assert await b.authenticate("bob@example.test", "crayon-2") is not None


async def test_users_without_keys_get_them_at_password_login(tmp_path: Path) -> None:
    repo = SqliteAccountRepository(tmp_path / "a.sqlite3")
    await repo.open()
    old = Accounts(repo)  # as before SCRAM: no records
    await old.create_domain("example.test")
    await old.create_user("carol@example.test", "pencil-1")
    records = SqliteRecordRepository(tmp_path / "a.sqlite3")
    await records.open()
    new = Accounts(repo, records)
    assert await records.get_scram("carol@example.test") is None
    assert (await new.login("carol@example.test", "pencil-1")).user is not None
    assert await records.get_scram("carol@example.test") is not None
    await records.close()
    await repo.close()


async def test_account_lockout_is_shared_and_expires(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    a, b, clock = replicas
    before = _metric("postmesh_auth_lockouts_total", "account")
    # Failures spread over two replicas count together.
    for acc in (a, b, a):
        assert (await acc.login("bob@example.test", "wrong", "pop3", "192.0.2.1")).user is None
    assert _metric("postmesh_auth_lockouts_total", "account") == before + 1
    # Now even the right password is refused, from any replica and any IP, with a retry time.
    locked = await b.login("bob@example.test", "pencil-1", "pop3", "192.0.2.99")
    assert locked.user is None and 0 < locked.retry_after <= 900
    params, retry = await a.scram_params("bob@example.test", "192.0.2.99")
    assert params is None and retry > 0
    clock.now += 901
    assert (await a.login("bob@example.test", "pencil-1", "pop3", "192.0.2.1")).user is not None


async def test_ip_lockout_covers_every_account(replicas: tuple[Accounts, Accounts, Clock]) -> None:
    a, b, clock = replicas
    for i in range(5):
        await (a if i % 2 else b).login(f"user{i}@example.test", "x", "imap", "198.51.100.7")
    locked = await a.login("bob@example.test", "pencil-1", "imap", "198.51.100.7")
    assert locked.retry_after > 0
    assert (await a.login("bob@example.test", "pencil-1", "imap", "198.51.100.8")).user
    clock.now += 901
    assert (await b.login("bob@example.test", "pencil-1", "imap", "198.51.100.7")).user


async def test_success_clears_the_account_count(
    replicas: tuple[Accounts, Accounts, Clock],
) -> None:
    a, _, _ = replicas
    for _ in range(2):
        await a.login("bob@example.test", "wrong")
    assert (await a.login("bob@example.test", "pencil-1")).user
    for _ in range(2):
        await a.login("bob@example.test", "wrong")
    assert (await a.login("bob@example.test", "pencil-1")).user  # not locked: count restarted


async def test_a_login_reads_its_records_in_one_trip(
    replicas: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0057: lockout counts, disabled and SCRAM presence in one read; nothing written
    when there is no count to clear; the answers are those of the calls one by one."""
    a, _, _ = replicas
    records = a.records
    assert isinstance(records, SqliteRecordRepository)
    trips: list[object] = []
    run = records._db.run

    async def counted(fn: Any) -> Any:
        trips.append(fn)
        return await run(fn)

    monkeypatch.setattr(records._db, "run", counted)
    assert (await a.login("bob@example.test", "pencil-1", "pop3", "192.0.2.1")).user
    assert len(trips) == 1
    # A failure to clear: read with the rest, then cleared (a second trip).
    assert (await a.login("bob@example.test", "wrong", "pop3", "192.0.2.1")).user is None
    trips.clear()
    assert (await a.login("bob@example.test", "pencil-1", "pop3", "192.0.2.1")).user
    assert len(trips) == 2
    assert await records.get_failures("user:bob@example.test") is None
    # The IP's count stays (one valid account must not launder a spray).
    ip = await records.get_failures("ip:192.0.2.1")
    assert ip is not None and ip.failures == 1
    # The backend-neutral default reads the same.
    keys = ["user:bob@example.test", "ip:192.0.2.1", "ip:192.0.2.9"]
    await records.set_disabled("bob@example.test", True)
    one = await records.login_state("bob@example.test", keys)
    each = await RecordRepository.login_state(records, "bob@example.test", keys)
    assert one == each and one.disabled and one.has_scram
    assert one.failures["ip:192.0.2.1"] == ip and one.failures["ip:192.0.2.9"] is None
    # Disabled: refused with the right password.
    assert (await a.login("bob@example.test", "pencil-1", "pop3", "192.0.2.1")).user is None


async def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    records = SqliteRecordRepository(tmp_path / "r.sqlite3")
    await records.open()
    guard = LoginGuard(records, LockoutPolicy(account_failures=99, backoff_max_seconds=1.0))
    delays = [await guard.failed("x@example.test", "") for _ in range(4)]
    assert delays == [0.25, 0.5, 1.0, 1.0]
    await records.close()


async def test_grpc_scram_and_locked_answers(
    replicas: tuple[Accounts, Accounts, Clock], tmp_path: Path
) -> None:
    accounts = replicas[0]
    # Over mutual TLS, as an edge calls auth (ADR 10).
    pki = ensure_dev_pki(tmp_path / "pki", ["auth", "imap-gw"])
    server = GrpcServer("127.0.0.1:0", pki["auth"].security())
    server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(accounts))
    await server.start(["postmesh.api.auth.v1.AuthService"])
    ch = channel(f"127.0.0.1:{server.port}", pki["imap-gw"].security(), "auth")
    try:
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        client = ScramClient("bob@example.test", "pencil-1")
        mech = ScramSha256Mechanism()
        mech.start(client.first())
        creds = await stub.GetScramCredentials(
            auth_pb2.GetScramCredentialsRequest(username="bob@example.test"), timeout=10
        )
        assert creds.iterations == 4096 and len(creds.salt) == 16
        from postmesh.common.sasl.scram import ScramParams

        challenge = mech.with_params(ScramParams(creds.salt, creds.iterations))
        assert isinstance(challenge, Challenge)
        step = mech.respond(client.final(challenge.data))
        assert isinstance(step, VerifyScramProof)
        resp = await stub.VerifyScramProof(
            auth_pb2.VerifyScramProofRequest(
                username=step.username, auth_message=step.auth_message, client_proof=step.proof
            ),
            timeout=10,
        )
        assert resp.ok and resp.user == "bob@example.test"
        assert client.verify(b"v=" + base64.b64encode(resp.server_signature))
        for _ in range(3):
            await stub.Authenticate(
                auth_pb2.AuthenticateRequest(username="bob@example.test", password="no"),
                timeout=10,
            )
        locked = await stub.Authenticate(
            auth_pb2.AuthenticateRequest(username="bob@example.test", password="pencil-1"),
            timeout=10,
        )
        assert not locked.ok and locked.retry_after_seconds > 0
        creds = await stub.GetScramCredentials(
            auth_pb2.GetScramCredentialsRequest(username="bob@example.test"), timeout=10
        )
        assert creds.retry_after_seconds > 0 and not creds.salt
    finally:
        await ch.close()
        await server.stop(0)


async def test_login_cache_skips_argon2_and_follows_password_changes(
    replicas: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    from postmesh.auth import accounts as accounts_module
    from postmesh.auth.login_cache import LoginCache

    a, b, clock = replicas
    a.login_cache = LoginCache(300, 100, clock)
    calls: list[str] = []
    real = accounts_module.verify_password

    async def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return await real(stored, password)

    monkeypatch.setattr(accounts_module, "verify_password", counting)
    for _ in range(3):
        assert (await a.login("bob@example.test", "pencil-1")).user
    assert calls == ["pencil-1"]  # argon2 once, then the cache
    assert (await a.login("bob@example.test", "wrong")).user is None  # a miss is verified
    # The password changed through the other replica: the cached entry no longer matches.
    await b.change_password("bob@example.test", "crayon-2")
    assert (await a.login("bob@example.test", "pencil-1")).user is None
    assert (await a.login("bob@example.test", "crayon-2")).user
    clock.now += 301  # expired entries are verified again
    calls.clear()
    assert (await a.login("bob@example.test", "crayon-2")).user
    assert calls == ["crayon-2"]
    # A disabled account is refused even with a cached password.
    assert a.records is not None
    await a.records.set_disabled("bob@example.test", True)
    assert (await a.login("bob@example.test", "crayon-2")).user is None


async def test_identical_logins_at_once_share_one_argon2_run(
    replicas: tuple[Accounts, Accounts, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 53: a client opening 8 sessions at once pays one verification, not 8; each login
    is still refused, counted and locked out on its own."""
    from postmesh.auth import accounts as accounts_module

    a, _, _ = replicas
    calls: list[str] = []
    real = accounts_module.verify_password

    async def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return await real(stored, password)

    monkeypatch.setattr(accounts_module, "verify_password", counting)
    assert a.login_cache is None  # the sharing alone, not the cache
    results = await asyncio.gather(*(a.login("bob@example.test", "pencil-1") for _ in range(8)))
    assert all(r.user is not None and r.user.address == "bob@example.test" for r in results)
    assert calls == ["pencil-1"]
    # One after the other, nothing is shared: each is verified.
    calls.clear()
    for _ in range(2):
        assert (await a.login("bob@example.test", "pencil-1")).user
    assert calls == ["pencil-1", "pencil-1"]
    # Different passwords at once are different questions.
    calls.clear()
    ok, bad = await asyncio.gather(
        a.login("bob@example.test", "pencil-1"), a.login("bob@example.test", "wrong-1")
    )
    assert ok.user and bad.user is None
    assert sorted(calls) == ["pencil-1", "wrong-1"]
    # The same wrong password three times at once: one argon2 run, three failures counted,
    # so the account is locked (POLICY: 3 failures) and the right password is refused.
    calls.clear()
    wrong = await asyncio.gather(*(a.login("bob@example.test", "wrong-2") for _ in range(3)))
    assert all(r.user is None for r in wrong) and calls == ["wrong-2"]
    locked = await a.login("bob@example.test", "pencil-1")
    assert locked.user is None and locked.retry_after > 0


async def test_a_caller_giving_up_does_not_cancel_the_shared_check() -> None:
    from postmesh.auth.shared_checks import SharedChecks

    release = asyncio.Event()
    runs: list[tuple[str, str]] = []

    async def slow(stored: str, password: str) -> bool:
        runs.append((stored, password))
        await release.wait()
        return password == "right"

    checks = SharedChecks(slow)
    first = asyncio.create_task(checks.verify("h", "right"))
    second = asyncio.create_task(checks.verify("h", "right"))
    other = asyncio.create_task(checks.verify("h2", "right"))
    await asyncio.sleep(0)
    assert checks.running == 2
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await second is True and await other is True
    assert first.cancelled()
    assert runs == [("h", "right"), ("h2", "right")]
    assert checks.running == 0
