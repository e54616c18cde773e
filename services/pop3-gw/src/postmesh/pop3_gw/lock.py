"""The session's exclusive hold on its maildrop (RFC 1939 §8).

A lease in the store: acquired at login, renewed every third of the lease in the background
while the session lives, released in UPDATE before the final reply (so a client reconnecting at
once finds it free) or when the connection ends. A gateway that dies stops renewing, and the
lock expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from postmesh.common.backend import BackendUnavailable
from postmesh.common.logging import get_logger
from postmesh.common.tasks import cancel_and_wait
from postmesh.pop3_gw.backend import LockResult, MailBackend, Maildrop

log = get_logger(__name__)


class MaildropLock:
    def __init__(
        self,
        backend: MailBackend,
        user: str,
        session_id: str,
        lease_seconds: int,
        on_lost: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.user = user
        self.session_id = session_id
        self.lease_seconds = lease_seconds
        self._on_lost = on_lost
        self.held = False
        self.lost = False
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> LockResult:
        """Raises BackendUnavailable when the store cannot answer."""
        result = await self.backend.acquire_lock(self.user, self.session_id, self.lease_seconds)
        if result.granted:
            self.held = True
            # The task copies the current log context: its lines carry the session id.
            self._renewer = asyncio.create_task(self._renew(), name="pop3-maildrop-lock")
        return result

    async def acquire_and_open(self) -> tuple[LockResult, Maildrop | None]:
        """:meth:`acquire` and, when granted, the maildrop read under the lock, in one store
        call (ADR 0057). Raises BackendUnavailable after giving back a lock that may have been
        granted (the store frees it itself when its listing failed; the call may have been
        lost in between)."""
        try:
            result, maildrop = await self.backend.lock_and_open(
                self.user, self.session_id, self.lease_seconds
            )
        except BackendUnavailable:
            with contextlib.suppress(BackendUnavailable):
                await self.backend.release_lock(self.user, self.session_id)
            raise
        if result.granted:
            self.held = True
            self._renewer = asyncio.create_task(self._renew(), name="pop3-maildrop-lock")
        return result, maildrop

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                granted = await self.backend.renew_lock(
                    self.user, self.session_id, self.lease_seconds
                )
            except BackendUnavailable:
                # Try again next time; the lease outlives two failed renewals.
                log.warning("could not renew the maildrop lock")
                continue
            if not granted:
                self.held, self.lost = False, True
                log.warning("maildrop lock lost to another session")
                self._on_lost()
                return

    async def release(self) -> None:
        """Idempotent; a failed release is logged (the lease then expires by itself)."""
        renewer, self._renewer = self._renewer, None
        await cancel_and_wait(renewer)
        if not self.held:
            return
        self.held = False
        try:
            await self.backend.release_lock(self.user, self.session_id)
        except BackendUnavailable:
            log.warning("could not release the maildrop lock; it will expire")
