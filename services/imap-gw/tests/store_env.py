"""The imap-gw server on the real store in-process: GrpcMailStore (the common typed store
client) against StoreServicer on 127.0.0.1:0 (postmesh.store.in_process), with the fake auth
service: the tests check the gateway against what the store really does (ADR 24).
``FaultyStore`` is for the failures a healthy store cannot give.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from postmesh.common.backend import BackendUnavailable
from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.memory import MemoryAccounts
from postmesh.common.store_client.types import AppendResult
from postmesh.common.tls import settings_server_context
from postmesh.imap_gw.grpc_backend import GrpcMailStore
from postmesh.imap_gw.mailbox_events import MailboxEventConsumer
from postmesh.imap_gw.server import ImapServer
from postmesh.imap_gw.settings import ImapSettings
from postmesh.store.contract_suite.janitor import janitor, later
from postmesh.store.in_process import InProcessStore
from postmesh.store.model import FlagsMode, Message

USER = "alice@example.org"
PASSWORD = 's3cret pass\\"word'  # has a space, a backslash and a quote


def make_message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.com>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


class FakeAuth(MemoryAccounts):
    """The auth service in memory: these suites are about the store and the protocol."""

    def __init__(self) -> None:
        super().__init__({USER: PASSWORD})
        self.down = False

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        if self.down:
            self.calls.append((username, remote_ip, mechanism))
            raise BackendUnavailable("auth down")
        return await super().check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )


def settings_for(tmp_path: Path, **overrides: object) -> ImapSettings:
    values: dict[str, object] = {
        "imap_port": 0,
        "imaps_port": 0,
        "data_dir": tmp_path,
        "imap_auth_failure_delay_seconds": 0,
        "imap_list_page_size": 2,  # small pages, so listing has to follow "more"
        "imap_select_page_size": 2,
    }
    values.update(overrides)
    return ImapSettings(**values)  # type: ignore[arg-type]


T = TypeVar("T")

# The seed's internal date (14-Nov-2023 22:13:20 +0000).
SEED_DATE = 1_700_000_000


class FaultyStore:
    """The gateway's real MailStore (GrpcMailStore) with what a healthy store cannot give:
    ``down`` makes every call raise BackendUnavailable, as an unreachable store would; and a
    log of the calls made, ``calls``: (method, arguments)."""

    def __init__(self, inner: GrpcMailStore) -> None:
        self._inner = inner
        self.down = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if name.startswith("_") or not callable(method):
            return method

        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, args))
            if self.down:
                raise BackendUnavailable("store down")
            return method(*args, **kw)

        return call

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Sequence[str],
        internal_date: int,
        size: int,
        content: AsyncIterator[bytes],
        *,
        claim_recent: bool = False,
        normalize_line_ends: bool = False,
    ) -> AppendResult:
        """Also logs the sizes of the chunks the session streamed (``append_chunks``)."""
        self.calls.append(("append", (user, mailbox, flags, internal_date, size)))
        if self.down:
            raise BackendUnavailable("store down")
        sizes: list[int] = []

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in content:
                sizes.append(len(chunk))
                yield chunk

        try:
            return await self._inner.append(
                user, mailbox, flags, internal_date, size, counted(),
                claim_recent=claim_recent, normalize_line_ends=normalize_line_ends,
            )  # fmt: skip
        finally:
            self.calls.append(("append_chunks", tuple(sizes)))

    def made(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of ``method`` (the user first)."""
        return [args for name, args in self.calls if name == method]


@dataclass
class StoreEnv:
    """A running server on the store in-process. The seed: INBOX with "first" \\Seen,
    "second", "third" \\Flagged (UIDs 1-3, MODSEQs 2-4: a new mailbox has MODSEQ 1), Sent
    (\\Sent), and Archive/2024 under a \\Noselect Archive, both unsubscribed. An earlier
    session claimed the INBOX's \\Recent: nothing is recent at the start."""

    server: ImapServer
    store: InProcessStore
    mail: FaultyStore
    auth: FakeAuth
    settings: ImapSettings
    user: str = USER
    password: str = PASSWORD
    events: MailboxEventConsumer | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def make_message(self, subject: str, body: str = "Hello.\r\n") -> bytes:
        return make_message(subject, body)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls_port(self) -> int:
        return self.server.tls_port

    # Changes made elsewhere (a delivery, another replica), on the store's repository;
    # ``event``: the sessions hear of it as from a mailbox event (False: as with the bus down).

    async def add(
        self,
        content: bytes,
        flags: Sequence[str] = (),
        mailbox: str = "INBOX",
        date: int = SEED_DATE,
        *,
        event: bool = False,
    ) -> int:
        """A delivery; its UID."""
        uid = (await self.store.deliver(self.user, content, flags, mailbox, date)).uid
        self._changed(mailbox, event)
        return uid

    async def deliver(self, subject: str, flags: Sequence[str] = (), mailbox: str = "INBOX") -> int:
        return await self.add(make_message(subject), flags, mailbox, event=True)

    async def set_flags(
        self, uid: int, flags: Sequence[str], mailbox: str = "INBOX", *, event: bool = True
    ) -> None:
        repo = self.store.app.repo
        await repo.store_flags(self.user, mailbox, [uid], FlagsMode.REPLACE, flags)
        self._changed(mailbox, event)

    async def expunge_elsewhere(
        self, uids: Sequence[int], mailbox: str = "INBOX", *, event: bool = True
    ) -> None:
        """Flags them \\Deleted and expunges them (two MODSEQs)."""
        repo = self.store.app.repo
        await repo.store_flags(self.user, mailbox, uids, FlagsMode.ADD, ["\\Deleted"])
        await repo.expunge(self.user, mailbox, uids)
        self._changed(mailbox, event)

    async def forget_tombstones(self) -> None:
        """What the store's janitor does once the tombstone retention has passed: the real
        janitor pass, a month on (GetChanges since an older MODSEQ is then incomplete)."""
        await janitor(self.store.app.repo).run_pass(later(31 * 86_400))

    def blocking(self, change: Coroutine[Any, Any, T]) -> T:
        """Run one of these helpers from a client's thread (imaplib), on the server's loop."""
        return asyncio.run_coroutine_threadsafe(change, self.loop).result(10)

    async def selected_as(self, name: str, timeout: float = 5.0) -> None:
        """Wait until a session of the user has ``name`` selected: a rename made by another
        session reaches this one as the store's event, through the bus, a moment later."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(
            s.selected is not None and s.selected.name == name
            for s in self.server.registry.sessions(self.user)
        ):
            assert asyncio.get_running_loop().time() < deadline, f"{name} never selected"
            await asyncio.sleep(0.01)

    async def stop_events(self) -> None:
        """From now on the sessions hear of nothing (the bus down)."""
        if self.events is not None:
            await self.events.stop()
            self.events = None

    def _changed(self, mailbox: str, event: bool) -> None:
        if event:
            self.server.registry.notify(self.user, mailbox)

    async def set_quota(self, storage_bytes: int, messages: int) -> None:
        """The user's own limits (0: unlimited), as the admin API sets them."""
        await self.store.app.repo.set_quota(self.user, storage_bytes, messages)

    # What the store holds now.

    async def uidvalidity(self, mailbox: str = "INBOX") -> int:
        return (await self.store.app.repo.get_mailbox(self.user, mailbox)).uidvalidity

    async def mailbox_names(self) -> list[str]:
        return [m.name for m in await self.store.app.repo.list_mailboxes(self.user)]

    async def uids(self, mailbox: str = "INBOX") -> list[int]:
        return [m.uid for m in await self.store.messages(self.user, mailbox)]

    async def message(self, uid: int, mailbox: str = "INBOX") -> Message:
        found = [m for m in await self.store.messages(self.user, mailbox) if m.uid == uid]
        assert found, f"no message {uid} in {mailbox}"
        return found[0]

    async def flags(self, uid: int, mailbox: str = "INBOX") -> tuple[str, ...]:
        return tuple((await self.message(uid, mailbox)).flags)

    async def content(self, uid: int, mailbox: str = "INBOX") -> bytes:
        chunks = await self.store.app.repo.read_message(self.user, mailbox, uid)
        return b"".join([c async for c in chunks])


@asynccontextmanager
async def store_env(tmp_path: Path, **overrides: object) -> AsyncIterator[StoreEnv]:
    async with InProcessStore() as store:
        settings = settings_for(tmp_path, **overrides)
        mail = FaultyStore(store.client(GrpcMailStore, call_stream=settings.imap_store_call_stream))
        auth = FakeAuth()
        server = ImapServer(settings, mail, auth, settings_server_context(settings))  # type: ignore[arg-type]
        env = StoreEnv(server, store, mail, auth, settings)
        await env.add(make_message("first"), ["\\Seen"])
        await env.add(make_message("second", "Line one.\r\nLine two.\r\n"))
        await env.add(make_message("third"), ["\\Flagged"])
        # The rest of the seed: INBOX, Sent (\\Sent) and Archive/2024, unsubscribed,
        # under a \\Noselect Archive (deleted with an inferior, RFC 9051 §6.3.5).
        repo = store.app.repo
        for name in ("Drafts", "Trash", "Junk"):
            await repo.delete_mailbox(USER, name)
        await repo.create_mailbox(USER, "Archive/2024")
        await repo.delete_mailbox(USER, "Archive")
        for name in ("Drafts", "Trash", "Junk", "Archive", "Archive/2024"):
            await repo.set_subscription(USER, name, False)
        # A client was told of the seed before (it claimed \Recent, RFC 3501 §2.3.2): nothing
        # is recent when a test starts; what a test delivers is (test_imap_gw_recent.py).
        await repo.claim_recent(USER, "INBOX", 0)
        # The store's mailbox events (its bus) reach the sessions as in production.
        env.events = MailboxEventConsumer(store.app.bus, server.registry)
        env.events.start()
        await server.start()
        try:
            yield env
        finally:
            await server.stop()
            await env.stop_events()
