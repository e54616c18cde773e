"""An in-memory fake behind the pop3-gw backend interface, and a running server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from postmesh.common.backend import BackendUnavailable
from postmesh.common.sasl import AuthVerdict
from postmesh.common.sasl.scram import (
    ScramKeys,
    ScramParams,
    ScramVerdict,
    decoy_params,
    derive_keys,
    verify_proof,
)
from postmesh.pop3_gw.backend import (
    DELETED,
    LockResult,
    Maildrop,
    MessageGone,
    MessageInfo,
)
from postmesh.pop3_gw.server import Pop3Service
from postmesh.pop3_gw.settings import Pop3Settings

USER = "alice@example.test"
PASSWORD = "s3cret pass word"  # a space: PASS takes the rest of the line (RFC 1939 §7)
UIDVALIDITY = 1234


def make_message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.com>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n\r\n" + body
    ).encode()


@dataclass
class FakeMessage:
    uid: int
    content: bytes
    flags: set[str] = field(default_factory=set)


class FakeBackend:
    """The store and auth services in memory, with switchable failures and a call log."""

    def __init__(self) -> None:
        self.passwords = {USER: PASSWORD}
        self.inbox: dict[str, dict[int, FakeMessage]] = {USER: {}}
        self.next_uid = 1
        # Method names whose next calls raise BackendUnavailable.
        self.failing: set[str] = set()
        # fetch: fail after this many chunks (None: never).
        self.fetch_fail_after: int | None = None
        self.chunk_size = 5  # small, so chunk boundaries fall everywhere
        self.calls: list[tuple[str, Any]] = []
        # Maildrop locks: user -> (session id, expiry on ``now()``); lock_offset moves time.
        self.locks: dict[str, tuple[str, float]] = {}
        self.lock_offset = 0.0
        # renew_lock answers this (False: the lock was taken by another session).
        self.renew_granted = True
        # > 0: the auth service answers "locked out, retry after this many seconds".
        self.locked_for = 0
        self.scram_cache: dict[str, ScramKeys] = {}

    def add(self, content: bytes, flags: Sequence[str] = (), user: str = USER) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.inbox.setdefault(user, {})[uid] = FakeMessage(uid, content, set(flags))
        return uid

    def _check(self, method: str) -> None:
        if method in self.failing:
            raise BackendUnavailable(method)

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        self.calls.append(("authenticate", (username, remote_ip, mechanism)))
        self._check("authenticate")
        canonical = username.lower()
        if self.locked_for:
            return AuthVerdict(None, self.locked_for)
        return AuthVerdict(canonical if self.passwords.get(canonical) == password else None)

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        self.calls.append(("scram_params", (username, remote_ip)))
        self._check("authenticate")
        if self.locked_for:
            return AuthVerdict(None, self.locked_for)
        keys = self._scram_keys(username.lower())
        if keys is None:
            return decoy_params(b"fake", username)
        return ScramParams(keys.salt, keys.iterations)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        self.calls.append(("verify_scram", (username, remote_ip)))
        self._check("authenticate")
        keys = self._scram_keys(username.lower())
        signature = verify_proof(keys, auth_message, proof) if keys else None
        return ScramVerdict(username.lower() if signature else None, signature or b"")

    def _scram_keys(self, user: str) -> ScramKeys | None:
        password = self.passwords.get(user)
        if password is None:
            return None
        if user not in self.scram_cache:
            self.scram_cache[user] = derive_keys(password, b"fixed-salt-16byt", 4096)
        return self.scram_cache[user]

    async def open_maildrop(self, user: str) -> Maildrop:
        self.calls.append(("open_maildrop", user))
        self._check("open_maildrop")
        msgs = sorted(self.inbox.get(user, {}).values(), key=lambda m: m.uid)
        return Maildrop(
            UIDVALIDITY,
            tuple(MessageInfo(m.uid, len(m.content), frozenset(m.flags)) for m in msgs),
        )

    async def fetch(self, user: str, uid: int, size_hint: int) -> AsyncGenerator[bytes, None]:
        self.calls.append(("fetch", uid))
        self._check("fetch")
        msg = self.inbox.get(user, {}).get(uid)
        if msg is None:
            raise MessageGone(uid)
        data = msg.content
        for n, i in enumerate(range(0, len(data), self.chunk_size)):
            if self.fetch_fail_after is not None and n >= self.fetch_fail_after:
                raise BackendUnavailable("fetch mid-stream")
            yield data[i : i + self.chunk_size]
            await asyncio.sleep(0)

    async def add_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        self.calls.append(("add_flags", (list(uids), list(flags))))
        self._check("add_flags")
        for uid in uids:
            if uid in self.inbox[user]:
                self.inbox[user][uid].flags.update(flags)

    async def remove_flags(self, user: str, uids: Sequence[int], flags: Sequence[str]) -> None:
        self.calls.append(("remove_flags", (list(uids), list(flags))))
        self._check("remove_flags")
        for uid in uids:
            if uid in self.inbox[user]:
                self.inbox[user][uid].flags.difference_update(flags)

    async def expunge(self, user: str, uids: Sequence[int]) -> list[int]:
        self.calls.append(("expunge", list(uids)))
        self._check("expunge")
        box = self.inbox[user]
        gone = [uid for uid in uids if uid in box and DELETED in box[uid].flags]
        for uid in gone:
            del box[uid]
        return gone

    def now(self) -> float:
        return time.monotonic() + self.lock_offset

    async def acquire_lock(self, user: str, session_id: str, lease_seconds: int) -> LockResult:
        self.calls.append(("acquire_lock", (user, session_id, lease_seconds)))
        self._check("acquire_lock")
        holder = self.locks.get(user)
        if holder is not None and holder[0] != session_id and holder[1] > self.now():
            return LockResult(False, holder[0])
        self.locks[user] = (session_id, self.now() + lease_seconds)
        return LockResult(True, session_id)

    async def renew_lock(self, user: str, session_id: str, lease_seconds: int) -> bool:
        self.calls.append(("renew_lock", (user, session_id)))
        self._check("renew_lock")
        holder = self.locks.get(user)
        if not self.renew_granted or holder is None or holder[0] != session_id:
            return False
        self.locks[user] = (session_id, self.now() + lease_seconds)
        return True

    async def release_lock(self, user: str, session_id: str) -> None:
        self.calls.append(("release_lock", (user, session_id)))
        self._check("release_lock")
        if self.locks.get(user, ("", 0.0))[0] == session_id:
            del self.locks[user]

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        pass


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


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
    backend: FakeBackend
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
async def start_server(tmp_path: Path, backend: FakeBackend) -> AsyncIterator[Callable[..., Any]]:
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
async def env(start_server: Callable[..., Any], backend: FakeBackend) -> Env:
    return Env(backend, await start_server())
