"""The pop3-gw backend on the real store in-process (the typed client against StoreServicer on
127.0.0.1:0) with a fake auth service and a fault injector, and a running server."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postmesh.common.backend import BackendUnavailable
from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.memory import MemoryAccounts
from postmesh.common.sasl.scram import ScramParams, ScramVerdict
from postmesh.common.store_client.types import FlagsMode
from postmesh.pop3_gw.backend import DELETED, INBOX, LockResult, MailBackend, Maildrop
from postmesh.pop3_gw.grpc_backend import StoreMaildrop
from postmesh.pop3_gw.server import Pop3Service
from postmesh.pop3_gw.settings import Pop3Settings
from postmesh.store.errors import NotFound
from postmesh.store.in_process import InProcessStore

USER = "alice@example.test"
PASSWORD = "s3cret pass word"  # a space: PASS takes the rest of the line (RFC 1939 §7)
# Small, so opening a maildrop pages through the store's listing.
PAGE_SIZE = 7


def make_message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.com>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n\r\n" + body
    ).encode()


def fake_auth() -> MemoryAccounts:
    """The auth service in memory (passwords, lockout, SCRAM): this suite is about the store."""
    return MemoryAccounts({USER: PASSWORD})


class StoreAndAuth(StoreMaildrop):
    """The gateway's real store half (StoreMaildrop on the typed client, against the store
    in-process) with the fake auth service."""

    def __init__(self, store: InProcessStore, auth: MemoryAccounts) -> None:
        super().__init__(store.client(), deadline=5.0, page_size=PAGE_SIZE)
        self.auth = auth

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        return await self.auth.check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        return await self.auth.scram_params(username, remote_ip=remote_ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        return await self.auth.verify_scram(username, auth_message, proof, remote_ip=remote_ip)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass


# The auth calls' names for ``failing`` and ``calls`` (one switch for the auth service).
_AUTH = "authenticate"


class FaultInjector:
    """A MailBackend around another that logs each call (``calls``) and injects the failures a
    unit test cannot get from a healthy store: BackendUnavailable from the methods named in
    ``failing``, and a content stream that breaks after ``fetch_fail_after`` chunks. The
    stream is re-cut into ``chunk_size`` pieces so chunk boundaries fall everywhere (byte
    stuffing, TOP's line count)."""

    def __init__(self, inner: MailBackend) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.fetch_fail_after: int | None = None
        # fetch_many (the read-ahead's batches) fails after this many messages.
        self.fetch_many_fail_after: int | None = None
        self.chunk_size = 5
        self.calls: list[tuple[str, Any]] = []

    def _call(self, method: str, args: Any, switch: str | None = None) -> None:
        self.calls.append((method, args))
        if (switch or method) in self.failing:
            raise BackendUnavailable(method)

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        self._call("authenticate", (username, remote_ip, mechanism), _AUTH)
        return await self.inner.check_password(
            username, password, remote_ip=remote_ip, mechanism=mechanism
        )

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        self._call("scram_params", (username, remote_ip), _AUTH)
        return await self.inner.scram_params(username, remote_ip=remote_ip)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        self._call("verify_scram", (username, remote_ip), _AUTH)
        return await self.inner.verify_scram(username, auth_message, proof, remote_ip=remote_ip)

    async def open_maildrop(self, user: str) -> Maildrop:
        self._call("open_maildrop", user)
        return await self.inner.open_maildrop(user)

    async def fetch(self, user: str, uid: int, size_hint: int) -> AsyncGenerator[bytes, None]:
        self._call("fetch", uid)
        n = 0
        async with aclosing(self.inner.fetch(user, uid, size_hint)) as chunks:
            async for chunk in chunks:
                for i in range(0, len(chunk), self.chunk_size):
                    if self.fetch_fail_after is not None and n >= self.fetch_fail_after:
                        raise BackendUnavailable("fetch mid-stream")
                    n += 1
                    yield chunk[i : i + self.chunk_size]
                    await asyncio.sleep(0)

    async def fetch_many(
        self, user: str, uids: Sequence[int], total_size: int
    ) -> AsyncGenerator[tuple[int, bytes | None, bool], None]:
        self._call("fetch_many", list(uids), "fetch")
        n = 0
        async with aclosing(self.inner.fetch_many(user, uids, total_size)) as items:
            async for item in items:
                if self.fetch_many_fail_after is not None and n >= self.fetch_many_fail_after:
                    raise BackendUnavailable("fetch_many mid-stream")
                n += 1
                yield item
                await asyncio.sleep(0)

    async def add_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        self._call("add_flags", (list(uids), list(flags)))
        await self.inner.add_flags(user, uids, flags)

    async def remove_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        self._call("remove_flags", (list(uids), list(flags)))
        await self.inner.remove_flags(user, uids, flags)

    async def expunge(self, user: str, uids: Sequence[int]) -> list[int]:
        self._call("expunge", list(uids))
        return await self.inner.expunge(user, uids)

    async def acquire_lock(self, user: str, session_id: str, lease_seconds: int) -> LockResult:
        self._call("acquire_lock", (user, session_id, lease_seconds))
        return await self.inner.acquire_lock(user, session_id, lease_seconds)

    async def lock_and_open(
        self, user: str, session_id: str, lease_seconds: int
    ) -> tuple[LockResult, Maildrop | None]:
        # One store call, logged and switched as its two halves ("acquire_lock", then
        # "open_maildrop" once the lock is granted).
        self._call("acquire_lock", (user, session_id, lease_seconds))
        locked, maildrop = await self.inner.lock_and_open(user, session_id, lease_seconds)
        if locked.granted:
            try:
                self._call("open_maildrop", user)
            except BackendUnavailable:
                # As the store does when its listing fails: the lock is freed first.
                await self.inner.release_lock(user, session_id)
                raise
        return locked, maildrop

    async def renew_lock(self, user: str, session_id: str, lease_seconds: int) -> bool:
        self._call("renew_lock", (user, session_id))
        return await self.inner.renew_lock(user, session_id, lease_seconds)

    async def release_lock(self, user: str, session_id: str) -> None:
        self._call("release_lock", (user, session_id))
        await self.inner.release_lock(user, session_id)

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class StoredMessage:
    uid: int
    flags: set[str]


class Backend(FaultInjector):
    """What the tests drive: the fault injector around the real store half and the fake auth,
    with set-up and inspection on the store in-process."""

    def __init__(self, store: InProcessStore) -> None:
        self.store = store
        self.auth = fake_auth()
        super().__init__(StoreAndAuth(store, self.auth))
        self._loop = asyncio.get_running_loop()

    async def add(self, content: bytes, flags: Sequence[str] = (), user: str = USER) -> int:
        """Deliver a message to the user's INBOX; its UID."""
        return (await self.store.deliver(user, content, flags)).uid

    async def inbox(self, user: str = USER) -> dict[int, StoredMessage]:
        """The INBOX as the store has it now, by UID."""
        try:
            found = await self.store.messages(user)
        except NotFound:
            return {}
        return {m.uid: StoredMessage(m.uid, set(m.flags)) for m in found}

    def expunge_elsewhere(self, uid: int, user: str = USER) -> None:
        """From a client thread: another session (IMAP) removes the message meanwhile."""

        async def remove() -> None:
            await self.store.app.repo.store_flags(user, INBOX, [uid], FlagsMode.ADD, [DELETED])
            await self.store.app.repo.expunge(user, INBOX, [uid])

        asyncio.run_coroutine_threadsafe(remove(), self._loop).result(10)

    async def lock_holder(self, user: str = USER) -> str | None:
        held = await self.store.lock_holder(user)
        return held[0] if held else None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[InProcessStore]:
    async with InProcessStore() as s:
        yield s


@pytest.fixture
async def backend(store: InProcessStore) -> Backend:
    return Backend(store)


def make_settings(tmp_path: Path, **overrides: Any) -> Pop3Settings:
    values: dict[str, Any] = {
        "pop3_port": 0,
        "pop3s_port": 0,
        "ops_port": 0,
        "data_dir": tmp_path,
        "pop3_auth_failure_delay_seconds": 0,
        **overrides,
    }
    return Pop3Settings(**values)


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Raw:
    """A bare POP3 connection, for what poplib refuses to send."""

    def __init__(self, port: int, *, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            sock = insecure_tls().wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: str | bytes) -> bytes:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def multi(self) -> list[bytes]:
        """The lines of a multi-line body, up to and without the terminating "."."""
        out = []
        while (line := self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            out.append(line)
        return out

    def starttls(self) -> None:
        self.file.close()
        self.sock = insecure_tls().wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Env:
    backend: Backend
    service: Pop3Service

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def tls_port(self) -> int:
        return self.service.tls_port

    def pop(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.port, timeout=10)

    def login(self) -> poplib.POP3:
        pop = self.pop()
        pop.user(USER)
        pop.pass_(PASSWORD)
        return pop

    def raw(self, *, greeting: bool = True) -> Raw:
        raw = Raw(self.port)
        if greeting:
            assert raw.line().startswith(b"+OK")
        return raw

    def raw_tls(self) -> Raw:
        raw = Raw(self.tls_port, tls=True)
        assert raw.line().startswith(b"+OK")
        return raw

    def raw_login(self) -> Raw:
        raw = self.raw()
        assert raw.cmd(f"USER {USER}").startswith(b"+OK")
        assert raw.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        return raw


@pytest.fixture
async def start_server(tmp_path: Path, backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(**settings)`` -> a running Pop3Service on the fake backend."""
    started: list[Pop3Service] = []

    async def start(**overrides: Any) -> Pop3Service:
        service = Pop3Service(make_settings(tmp_path, **overrides), backend=backend)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def env(start_server: Callable[..., Any], backend: Backend) -> Env:
    return Env(backend, await start_server())
