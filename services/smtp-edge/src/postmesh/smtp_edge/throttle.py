"""Per-replica client limits, as Postfix's anvil(8) keeps them per host: concurrent connections
per client address and messages per sender (authenticated user, else client address) in a
sliding minute. Loopback clients are exempt, as Postfix exempts $mynetworks
(smtpd_client_event_limit_exceptions). Password guessing is limited across replicas by auth's
lockout instead (a shared store)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque


class MessageRate:
    """At most ``per_minute`` messages per key in any 60 s window; 0 means no limit. Remembers
    at most ``max_keys`` keys (the least recently used are forgotten)."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        """Counts one message for ``key`` unless that would pass the limit."""
        if self.per_minute <= 0:
            return True
        now = time.monotonic() if now is None else now
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and now - events[0] >= self.WINDOW:
            events.popleft()
        if len(events) >= self.per_minute:
            return False
        events.append(now)
        return True
