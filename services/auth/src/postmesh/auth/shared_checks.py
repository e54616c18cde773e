"""Identical password checks that run at the same time share one argon2 run.

A client that opens several sessions at once (a submission client's connection pool, an IMAP
client's parallel folders) sends the same username and password several times within one
argon2 verification (~0.25 s of CPU with the RFC 9106 "low memory" parameters). The login cache
only helps once one of them has finished, so each paid argon2 in full: 8 sessions cost ~2 s of
CPU on two cores (ADR 53). ``argon2.verify(stored, password)`` is a pure function of its two
arguments, so the callers that ask it the same question while it runs are given its answer;
each login still goes through lockout, the disabled check and the failure count on its own.

Running checks are found by an HMAC of (stored hash, password) under a per-process random key,
as the login cache does: the password is not kept as a dictionary key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from postmesh.common.shared_calls import SharedCalls

SHARED = Counter(
    "postmesh_auth_password_checks_shared_total",
    "Password checks answered by an identical argon2 verification already running.",
)

Verify = Callable[[str, str], Awaitable[bool]]


class SharedChecks:
    def __init__(self, verify: Verify) -> None:
        self._verify = verify
        self._key = secrets.token_bytes(32)
        self._calls: SharedCalls[bytes, bool] = SharedCalls(on_shared=SHARED.inc)

    def _digest(self, stored: str, password: str) -> bytes:
        msg = stored.encode() + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    async def verify(self, stored: str, password: str) -> bool:
        # A caller that gives up (its client left) does not cancel the others' check.
        return await self._calls.share(
            self._digest(stored, password), lambda: self._verify(stored, password)
        )

    @property
    def running(self) -> int:
        return self._calls.running
