"""Recipient resolution: users, aliases (nested, looping, remote), plus-addressing, catch-all,
disabled and deleted accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postmesh.auth.accounts import Accounts
from postmesh.auth.addresses import InvalidAddress, canonical_address, remote_address
from postmesh.auth.aliases import Aliases, InvalidTarget
from postmesh.auth.recipients import MAX_ALIAS_DEPTH, RecipientKind, Resolution, strip_extension
from postmesh.auth.records.sqlite import SqliteRecordRepository
from postmesh.auth.repository import AlreadyExists, NotFound
from postmesh.auth.repository.sqlite import SqliteAccountRepository

LOCAL = RecipientKind.LOCAL_USER


async def _accounts(path: Path, delimiter: str = "+", postmaster: str = "") -> Accounts:
    repo = SqliteAccountRepository(path)
    records = SqliteRecordRepository(path)
    await repo.open()
    await records.open()
    return Accounts(repo, records, recipient_delimiter=delimiter, postmaster=postmaster)


@pytest.fixture
async def accounts(tmp_path: Path) -> AsyncIterator[Accounts]:
    acc = await _accounts(tmp_path / "auth.sqlite3")
    await acc.create_domain("example.test")
    for name in ("alice", "bob", "carol"):
        await acc.create_user(f"{name}@example.test", "pw1234")
    yield acc
    assert acc.records is not None
    await acc.records.close()
    await acc.repo.close()


def _aliases(acc: Accounts) -> Aliases:
    assert acc.aliases is not None
    return acc.aliases


async def test_alias_expands_to_users_and_remote_targets(accounts: Accounts) -> None:
    al = _aliases(accounts)
    await al.create(
        "Sales@Example.test", ["alice@example.test", "Bob@EXAMPLE.test", "Ext@Far.test"]
    )
    r = await accounts.resolve_recipient("sales@example.test")
    # Remote local parts keep their case; local ones are canonical.
    assert r == Resolution(LOCAL, ("alice@example.test", "bob@example.test"), ("Ext@far.test",))


async def test_nested_aliases_each_user_once_and_loops_end(accounts: Accounts) -> None:
    al = _aliases(accounts)
    await al.create("team@example.test", ["alice@example.test", "bob@example.test"])
    await al.create("all@example.test", ["team@example.test", "alice@example.test"])
    r = await accounts.resolve_recipient("all@example.test")
    assert r.kind is LOCAL and r.users == ("alice@example.test", "bob@example.test")
    # a -> b -> a: both expand to what lies outside the loop, nothing repeats.
    await al.create("loop-a@example.test", ["carol@example.test"])
    await al.create("loop-b@example.test", ["loop-a@example.test"])
    await al.replace("loop-a@example.test", ["loop-b@example.test", "carol@example.test"])
    for name in ("loop-a", "loop-b"):
        r = await accounts.resolve_recipient(f"{name}@example.test")
        assert r.kind is LOCAL and r.users == ("carol@example.test",)
    # A pure loop delivers to nobody: refused as unknown rather than accepted and lost.
    await al.replace("loop-a@example.test", ["loop-b@example.test"])
    r = await accounts.resolve_recipient("loop-a@example.test")
    assert r.kind is RecipientKind.UNKNOWN_LOCAL


async def test_alias_chain_depth_is_limited(accounts: Accounts) -> None:
    al = _aliases(accounts)
    await al.create("c0@example.test", ["alice@example.test"])
    for i in range(1, MAX_ALIAS_DEPTH + 2):
        await al.create(f"c{i}@example.test", [f"c{i - 1}@example.test"])
    ok = await accounts.resolve_recipient(f"c{MAX_ALIAS_DEPTH - 1}@example.test")
    assert ok.users == ("alice@example.test",)
    cut = await accounts.resolve_recipient(f"c{MAX_ALIAS_DEPTH + 1}@example.test")
    assert cut.kind is RecipientKind.UNKNOWN_LOCAL


async def test_alias_on_a_user_address_can_keep_a_copy(accounts: Accounts) -> None:
    await _aliases(accounts).create("bob@example.test", ["bob@example.test", "bob@far.test"])
    r = await accounts.resolve_recipient("bob@example.test")
    assert r.users == ("bob@example.test",) and r.remote == ("bob@far.test",)


async def test_plus_addressing(tmp_path: Path, accounts: Accounts) -> None:
    r = await accounts.resolve_recipient("Alice+News@example.test")
    assert r == Resolution(LOCAL, ("alice@example.test",))
    await _aliases(accounts).create("team@example.test", ["bob@example.test"])
    assert (await accounts.resolve_recipient("team+x@example.test")).users == ("bob@example.test",)
    # An exact user or alias with the delimiter in its name wins over stripping.
    await accounts.create_user("carol+shop@example.test", "pw1234")
    r = await accounts.resolve_recipient("carol+shop@example.test")
    assert r.users == ("carol+shop@example.test",)
    assert (await accounts.resolve_recipient("nobody+x@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )
    # Empty delimiter: plus-addressing is off.
    off = Accounts(accounts.repo, accounts.records, recipient_delimiter="")
    assert (await off.resolve_recipient("alice+news@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )


def test_strip_extension() -> None:
    assert strip_extension("a+b+c@d.test", "+") == "a@d.test"
    assert strip_extension("a-b+c@d.test", "+-") == "a@d.test"
    assert strip_extension("+a@d.test", "+") is None
    assert strip_extension("a@d.test", "+") is None
    assert strip_extension("a+b@d.test", "") is None


async def test_catch_all_only_when_nothing_else_matches(accounts: Accounts) -> None:
    al = _aliases(accounts)
    await accounts.create_domain("other.test")
    await al.set_catch_all("Example.TEST", "carol@example.test")
    r = await accounts.resolve_recipient("whoever@example.test")
    assert r == Resolution(LOCAL, ("carol@example.test",), catch_all=True)
    # Users, aliases and user+tag come first; other domains are untouched.
    assert (await accounts.resolve_recipient("bob@example.test")).users == ("bob@example.test",)
    r = await accounts.resolve_recipient("bob+x@example.test")
    assert r.users == ("bob@example.test",) and not r.catch_all
    assert (await accounts.resolve_recipient("x@other.test")).kind is (RecipientKind.UNKNOWN_LOCAL)
    assert await al.delete_catch_all("example.test")
    assert (await accounts.resolve_recipient("whoever@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )
    with pytest.raises(NotFound):
        await al.set_catch_all("unhosted.test", "carol@example.test")
    with pytest.raises(InvalidTarget):
        await al.set_catch_all("example.test", "ghost@example.test")


async def test_disabled_user_gets_no_mail_and_cannot_log_in(accounts: Accounts) -> None:
    await _aliases(accounts).create("team@example.test", ["alice@example.test", "bob@example.test"])
    assert await accounts.authenticate("bob@example.test", "pw1234") is not None
    await accounts.set_disabled("BOB@example.test", True)
    assert await accounts.is_disabled("bob@example.test")
    assert (await accounts.resolve_recipient("bob@example.test")).kind is RecipientKind.DISABLED
    assert (await accounts.resolve_recipient("bob+x@example.test")).kind is RecipientKind.DISABLED
    assert (await accounts.resolve_recipient("team@example.test")).users == ("alice@example.test",)
    assert await accounts.authenticate("bob@example.test", "pw1234") is None
    await accounts.set_disabled("bob@example.test", False)
    assert await accounts.authenticate("bob@example.test", "pw1234") is not None
    assert (await accounts.resolve_recipient("bob@example.test")).users == ("bob@example.test",)
    with pytest.raises(NotFound):
        await accounts.set_disabled("ghost@example.test", True)


async def test_deleted_user_is_unknown_everywhere(accounts: Accounts) -> None:
    await _aliases(accounts).create("team@example.test", ["alice@example.test", "bob@example.test"])
    await accounts.delete_user("bob@example.test")
    assert await accounts.authenticate("bob@example.test", "pw1234") is None
    assert accounts.records is not None
    assert await accounts.records.get_scram("bob@example.test") is None
    assert (await accounts.resolve_recipient("bob@example.test")).kind is (
        RecipientKind.UNKNOWN_LOCAL
    )
    assert (await accounts.resolve_recipient("team@example.test")).users == ("alice@example.test",)
    with pytest.raises(NotFound):
        await accounts.delete_user("bob@example.test")


async def test_alias_input_is_checked(accounts: Accounts) -> None:
    al = _aliases(accounts)
    with pytest.raises(NotFound):
        await al.create("x@unhosted.test", ["alice@example.test"])
    with pytest.raises(InvalidTarget):
        await al.create("x@example.test", ["typo@example.test"])
    with pytest.raises(InvalidTarget):
        await al.create("x@example.test", [])
    with pytest.raises(InvalidAddress):
        await al.create("x@example.test", ["not an address"])
    await al.create("x@example.test", ["alice@example.test", "ALICE@example.test"])
    assert (await al.get("X@example.test")) is not None
    with pytest.raises(AlreadyExists):
        await al.create("x@example.test", ["bob@example.test"])
    assert [a.address for a in await al.list("example.test")] == ["x@example.test"]
    assert (await al.list("example.test"))[0].targets == ("alice@example.test",)
    assert await al.delete("x@example.test")
    assert not await al.delete("x@example.test")


def test_addresses_rfc6531_and_idn() -> None:
    assert canonical_address("Jörg@Bücher.example") == "jörg@xn--bcher-kva.example"
    assert remote_address("Jörg@Bücher.example") == "Jörg@xn--bcher-kva.example"
    # NFC: a decomposed "é" equals the composed one.
    assert canonical_address("re\u0301sume\u0301@example.test") == "résumé@example.test"
    for bad in (
        "a b@example.test",
        "a..b@example.test",
        '"quoted"@example.test',
        "a\x00b@example.test",
        "a\u200bb@example.test",  # zero-width space (Cf)
        "x" * 65 + "@example.test",
        "a@-bad-.test",
        "a@nodot",
        "@example.test",
        "a@",
    ):
        with pytest.raises(InvalidAddress):
            canonical_address(bad)


async def test_a_local_domain_is_looked_up_once_a_new_one_at_once(accounts: Accounts) -> None:
    """Every submitted and delivered message resolves its addresses: a domain found local is
    remembered (domains are never removed); one not found is asked again each time, so a
    domain added meanwhile is local at once."""
    asked: list[str] = []
    get_domain = accounts.repo.get_domain

    async def counted(name: str) -> object:
        asked.append(name)
        return await get_domain(name)

    accounts.repo.get_domain = counted  # type: ignore[method-assign,assignment]
    for _ in range(3):
        assert (await accounts.resolve_recipient("alice@example.test")).kind is LOCAL
        assert (await accounts.resolve_recipient("x@new.test")).kind is RecipientKind.REMOTE
    assert asked == ["example.test"] + ["new.test"] * 3
    await accounts.create_domain("new.test")
    await accounts.create_user("x@new.test", "pw1234")
    assert (await accounts.resolve_recipient("x@new.test")).kind is LOCAL


async def test_postmaster_of_every_domain_and_the_bare_one(tmp_path: Path) -> None:
    """RFC 5321 §4.5.1: postmaster@ each hosted domain and <Postmaster> are accepted; without
    an address of their own they go to POSTMESH_AUTH_POSTMASTER."""
    acc = await _accounts(tmp_path / "auth.sqlite3", postmaster="Alice@Example.test")
    try:
        await acc.create_domain("example.test")
        await acc.create_domain("other.test")
        for name in ("alice", "bob"):
            await acc.create_user(f"{name}@example.test", "pw1234")
        for address in ("postmaster@example.test", "PostMaster@other.test", "postmaster"):
            r = await acc.resolve_recipient(address)
            assert r == Resolution(LOCAL, ("alice@example.test",)), address
        # A domain's own postmaster alias wins; elsewhere it stays remote.
        await _aliases(acc).create("postmaster@other.test", ["bob@example.test"])
        r = await acc.resolve_recipient("postmaster@other.test")
        assert r == Resolution(LOCAL, ("bob@example.test",))
        assert (await acc.resolve_recipient("postmaster@far.test")).kind is RecipientKind.REMOTE
    finally:
        assert acc.records is not None
        await acc.records.close()
        await acc.repo.close()
    # Without the setting: only postmaster addresses made per domain.
    acc = await _accounts(tmp_path / "auth2.sqlite3")
    try:
        await acc.create_domain("example.test")
        for address in ("postmaster@example.test", "postmaster"):
            assert (await acc.resolve_recipient(address)).kind is RecipientKind.UNKNOWN_LOCAL
    finally:
        assert acc.records is not None
        await acc.records.close()
        await acc.repo.close()
