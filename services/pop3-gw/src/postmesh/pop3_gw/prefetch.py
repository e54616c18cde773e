"""Read-ahead of the next message: POP3 downloaders walk the maildrop in order (RETR 1, 2, ...),
waiting for each response before the next command, so the store round trip of message n+1 can
run while message n is still on its way to the client, instead of after it.

At most one message per session is held, and only one up to a size limit; a failed or unused
read-ahead costs one store read and is otherwise invisible (RETR then streams as usual and
reports the error itself).
"""

from __future__ import annotations

import asyncio
import contextlib

from postmesh.common.backend import BackendUnavailable
from postmesh.pop3_gw.backend import MailBackend, MessageGone


class ReadAhead:
    def __init__(self, backend: MailBackend, user: str, max_octets: int) -> None:
        self._backend = backend
        self._user = user
        self._max_octets = max_octets
        self._uid: int | None = None
        self._task: asyncio.Task[bytes] | None = None

    def start(self, uid: int, size: int) -> None:
        if size > self._max_octets or uid == self._uid:
            return
        self._cancel()
        self._uid = uid
        self._task = asyncio.create_task(self._read(uid, size))

    async def _read(self, uid: int, size: int) -> bytes:
        parts = [chunk async for chunk in self._backend.fetch(self._user, uid, size)]
        return b"".join(parts)

    async def take(self, uid: int) -> bytes | None:
        """The content of ``uid`` if it was read ahead successfully, else None."""
        task, self._task = self._task, None
        wanted, self._uid = self._uid == uid, None
        if task is None:
            return None
        if not wanted:
            task.cancel()
            return None
        try:
            return await task
        except (MessageGone, BackendUnavailable):
            return None

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task, self._uid = None, None

    async def close(self) -> None:
        task = self._task
        self._cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, MessageGone, BackendUnavailable):
                await task
