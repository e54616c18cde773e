"""The login cache's own rules: expiry, the stored hash, its bound, and what it keeps."""

from __future__ import annotations

from postmesh.auth.login_cache import LoginCache


def test_a_hit_needs_the_same_password_and_hash_before_expiry() -> None:
    now = [100.0]
    cache = LoginCache(60, 10, clock=lambda: now[0])
    cache.add("a@example.test", "pw", "$hash1")
    assert cache.hit("a@example.test", "pw", "$hash1")
    assert not cache.hit("a@example.test", "other", "$hash1")
    assert not cache.hit("a@example.test", "pw", "$hash2")  # password changed elsewhere
    now[0] += 61
    assert not cache.hit("a@example.test", "pw", "$hash1")


def test_it_keeps_at_most_its_bound_forgetting_the_least_recently_used() -> None:
    cache = LoginCache(60, 2)
    cache.add("a@example.test", "pw", "h")
    cache.add("b@example.test", "pw", "h")
    assert cache.hit("a@example.test", "pw", "h")  # a is now the more recent
    cache.add("c@example.test", "pw", "h")
    assert cache.hit("a@example.test", "pw", "h")
    assert not cache.hit("b@example.test", "pw", "h")
    assert cache.hit("c@example.test", "pw", "h")


def test_off_when_ttl_or_bound_is_zero_and_forget_drops_an_entry() -> None:
    for ttl, entries in ((0, 10), (60, 0)):
        cache = LoginCache(ttl, entries)
        cache.add("a@example.test", "pw", "h")
        assert not cache.hit("a@example.test", "pw", "h")
    cache = LoginCache(60, 10)
    cache.add("a@example.test", "pw", "h")
    cache.forget("a@example.test")
    assert not cache.hit("a@example.test", "pw", "h")


def test_the_password_is_not_kept() -> None:
    cache = LoginCache(60, 10)
    cache.add("a@example.test", "secret-password", "h")
    assert "secret-password" not in repr(vars(cache)) + repr(list(cache._entries._entries.values()))
