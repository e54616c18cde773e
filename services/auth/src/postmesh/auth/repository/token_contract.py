"""The admin-token contract, written once and run against both account repositories: the
SQLite one in services/auth/tests, the MongoDB one against a real FerretDB in
tests/integration/test_auth_accounts_contract.py. A test class subclasses
:class:`AdminTokenContract` and provides an async ``repo`` fixture: an opened, empty
:class:`AccountRepository`. Call ``pytest.register_assert_rewrite`` on this module's name
before importing it to get pytest's detailed assertion messages."""

from __future__ import annotations

import pytest

from postmesh.auth.admin_tokens import ADMIN, AdminTokens, Role
from postmesh.auth.repository import AccountRepository, AdminToken, AlreadyExists, NotFound
from postmesh.common.admin_token import token_digest

ADMIN_TOKEN = "admin-token-of-the-settings-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class AdminTokenContract:
    async def test_records_round_trip(self, repo: AccountRepository) -> None:
        a = AdminToken("0" * 16, "d" * 64, "domain-admin", ("a.test", "b.test"), "ops", 1.5)
        b = AdminToken("f" * 16, "e" * 64, "domain-admin", ("b.test",), "", 2.5, 99.25)
        await repo.add_admin_token(b)
        await repo.add_admin_token(a)
        assert await repo.get_admin_token(a.id) == a
        assert await repo.get_admin_token(b.id) == b
        assert await repo.get_admin_token("1" * 16) is None
        assert await repo.list_admin_tokens() == [a, b]  # oldest first
        with pytest.raises(AlreadyExists):
            await repo.add_admin_token(AdminToken(a.id, "x" * 64, "domain-admin", (), "", 3.0))
        assert await repo.get_admin_token(a.id) == a
        assert await repo.delete_admin_token(a.id)
        assert not await repo.delete_admin_token(a.id)
        assert await repo.list_admin_tokens() == [b]

    async def test_issued_tokens_authenticate_by_digest(self, repo: AccountRepository) -> None:
        await repo.add_domain("a.test")
        await repo.add_domain("xn--bcher-kva.example")
        clock = Clock()
        tokens = AdminTokens(repo, ADMIN_TOKEN, clock)
        assert await tokens.authenticate(ADMIN_TOKEN) == ADMIN
        record, token = await tokens.create(["A.test.", "bücher.example", "a.test"], "it", 60)
        # Canonical names, once each; the token itself is nowhere in the record.
        assert record.domains == ("a.test", "xn--bcher-kva.example")
        assert record.role == "domain-admin" and record.label == "it"
        assert record.expires_at == clock.now + 60
        assert token not in repr(record) and record.token_digest == token_digest(token)
        assert (await repo.get_admin_token(record.id)) == record
        who = await tokens.authenticate(token)
        assert who is not None and who.role is Role.DOMAIN_ADMIN and not who.is_admin
        assert who.domains == {"a.test", "xn--bcher-kva.example"}
        assert who.token_id == record.id
        assert who.may_manage("a.test") and not who.may_manage("b.test")
        # The right id with a wrong secret, a truncated token, the digest itself: nothing.
        forged = token[:-1] + ("A" if token[-1] != "A" else "B")
        for bad in (forged, token[:-1], record.token_digest, "", ADMIN_TOKEN + "x"):
            assert await tokens.authenticate(bad) is None, bad
        clock.now += 61
        assert await tokens.authenticate(token) is None  # expired
        assert await tokens.authenticate(ADMIN_TOKEN) == ADMIN

    async def test_revoked_tokens_and_unknown_domains(self, repo: AccountRepository) -> None:
        await repo.add_domain("a.test")
        tokens = AdminTokens(repo, ADMIN_TOKEN)
        first, token1 = await tokens.create(["a.test"])
        second, token2 = await tokens.create(["a.test"], "second")
        assert first.id != second.id and token1 != token2 and first.expires_at is None
        assert [t.id for t in await tokens.list()] == [first.id, second.id]
        assert await tokens.revoke(first.id)
        assert not await tokens.revoke(first.id)
        assert await tokens.authenticate(token1) is None
        assert await tokens.authenticate(token2) is not None
        with pytest.raises(NotFound):
            await tokens.create(["a.test", "elsewhere.test"])
        with pytest.raises(ValueError):
            await tokens.create([])
        assert [t.id for t in await tokens.list()] == [second.id]
