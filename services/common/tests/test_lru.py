"""Lru: least recently used entries go first, by count or by weight; a value heavier than the
whole bound is not kept."""

from __future__ import annotations

from postmesh.common.lru import Lru


def test_bounded_by_weight_least_recently_used_first() -> None:
    lru: Lru[str, list[int]] = Lru(5, len)
    lru.put("a", [1, 2])
    lru.put("b", [1, 2])
    assert lru.get("a") == [1, 2]  # a is now the most recent
    lru.put("c", [1, 2])  # 6 > 5: b goes
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ([1, 2], None, [1, 2])
    lru.put("a", [1])  # replaced: its weight counted once
    lru.put("d", [1, 2])
    assert len(lru) == 3
    lru.put("big", [0] * 6)  # heavier than the bound: not kept, nothing else goes
    assert lru.get("big") is None and len(lru) == 3
    assert "c" in lru and lru.pop("c") == [1, 2] and lru.pop("c") is None and "c" not in lru


def test_bounded_by_count_by_default() -> None:
    lru: Lru[int, str] = Lru(2)
    for i in range(3):
        lru.put(i, str(i))
    assert (lru.get(0), lru.get(1), lru.get(2)) == (None, "1", "2")
    lru.clear()
    assert len(lru) == 0
