"""ExpiringKeys: members leave ttl seconds after they were last added, or oldest first past
max_keys; ttl <= 0 remembers nothing."""

from __future__ import annotations

from postmesh.common.expiring_keys import ExpiringKeys


def test_members_expire_and_a_new_add_restarts_their_time() -> None:
    now = [10.0]
    keys: ExpiringKeys[str] = ExpiringKeys(5.0, 10, lambda: now[0])
    keys.add("a")
    now[0] += 4.0
    assert "a" in keys
    keys.add("a")
    now[0] += 4.0
    assert "a" in keys and "b" not in keys
    now[0] += 1.0
    assert "a" not in keys


def test_bounded_oldest_first_and_off_at_zero() -> None:
    keys: ExpiringKeys[int] = ExpiringKeys(60.0, 2)
    for k in (1, 2, 3):
        keys.add(k)
    assert [k in keys for k in (1, 2, 3)] == [False, True, True]
    off: ExpiringKeys[int] = ExpiringKeys(0, 2)
    off.add(1)
    assert 1 not in off
