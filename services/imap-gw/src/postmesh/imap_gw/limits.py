"""Per-user session accounting: how many logged-in sessions each user has on this replica."""

from __future__ import annotations


class UserSessions:
    """Counts logged-in sessions per user against a cap (``imap_max_sessions_per_user``).

    Per replica on purpose: counting across replicas would need shared state on every login,
    and the cap exists to stop one account (a runaway client, a stolen password) from taking a
    replica's connections, which a per-replica count does."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, user: str) -> bool:
        """Count one more session for ``user``; False (nothing counted) at the cap."""
        n = self._counts.get(user, 0)
        if n >= self.limit:
            return False
        self._counts[user] = n + 1
        return True

    def release(self, user: str) -> None:
        n = self._counts.get(user, 0) - 1
        if n > 0:
            self._counts[user] = n
        else:
            self._counts.pop(user, None)

    def count(self, user: str) -> int:
        return self._counts.get(user, 0)
