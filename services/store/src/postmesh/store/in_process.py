"""The real store, in-process on 127.0.0.1 port 0, for other services' unit tests.

StoreApp on SQLite (and the SQLite bus) in a scratch directory: the gateways' tests talk to
the real StoreServicer and MaildropLockServicer through the typed client
(:class:`postmesh.common.store_client.StoreClient`) instead of a hand-written fake, so what
they check is what the store does. Set-up and inspection go to the repositories directly.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from postmesh.common.grpc import channel
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.store_client import StoreClient
from postmesh.store.app import StoreApp
from postmesh.store.model import INBOX, DeliverResult, Delivery, Message
from postmesh.store.settings import StoreSettings

_PROBE = "in-process-store-probe"
C = TypeVar("C", bound=StoreClient)


class InProcessStore:
    """``async with InProcessStore() as store``: a running store; ``store.client()`` a client
    on it. ``clock_offset`` moves the maildrop locks' time (lease expiry)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        """``data_dir`` None: a scratch directory of its own, on tmpfs (/dev/shm) where there is
        one, removed at the end. The store commits with fsync (synchronous=FULL), which costs
        milliseconds a transaction on a disk and nothing on tmpfs (a test's store started and
        seeded: 0.13 s against 0.02 s); these tests are not about durability."""
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            shm = Path("/dev/shm")
            where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
            self._scratch = tempfile.TemporaryDirectory(prefix="postmesh-store-", dir=where)
            data_dir = Path(self._scratch.name)
        settings = StoreSettings(
            data_dir=data_dir, store_listen="127.0.0.1:0", bus="sqlite", grpc_plaintext=True
        )
        self.app = StoreApp(settings)
        self.clock_offset = 0.0
        self.app.queue.repo.clock = lambda: time.time() + self.clock_offset
        self._queue_ids = itertools.count(1)
        self._clients: list[StoreClient] = []

    async def __aenter__(self) -> InProcessStore:
        await self.app.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.close()
        await self.app.stop()
        if self._scratch is not None:
            self._scratch.cleanup()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def client(
        self,
        cls: type[C] = StoreClient,  # type: ignore[assignment]
        deadline: float = 5.0,
        **options: Any,
    ) -> C:
        """A client (``cls``: StoreClient or a gateway's subclass) on its own channel, closed
        with the store; ``options``: the client's keyword arguments (``call_stream``)."""
        client = cls(channel(self.address, GrpcSecurity(), "store"), deadline, **options)
        self._clients.append(client)
        return client

    # -- set-up and inspection, on the repositories ------------------------------------------

    async def deliver(
        self,
        user: str,
        content: bytes,
        flags: Iterable[str] = (),
        mailbox: str = INBOX,
        internal_date: int = 0,
    ) -> DeliverResult:
        """A message as local delivery stores it (provisions the user); date 0: now."""
        qid = f"test{next(self._queue_ids):08d}"
        return await self.app.repo.deliver(
            Delivery(qid, user, mailbox, content, None, tuple(flags), internal_date)
        )

    async def messages(self, user: str, mailbox: str = INBOX) -> list[Message]:
        """The mailbox's messages, ascending UID."""
        out: list[Message] = []
        while True:
            page, more = await self.app.repo.list_messages(
                user, mailbox, out[-1].uid if out else 0, 1000
            )
            out += page
            if not more:
                return out

    async def lock_holder(self, user: str) -> tuple[str, int] | None:
        """Who holds ``user``'s maildrop lock and until when (Unix ms on the store's clock);
        None when nobody does. Probes by asking for the lock (and giving it back at once)."""
        locks = self.app.queue.repo
        state = await locks.acquire_lock(user, _PROBE, 1)
        if state.granted:
            await locks.release_lock(user, _PROBE)
            return None
        return state.holder, state.expires_at_ms
