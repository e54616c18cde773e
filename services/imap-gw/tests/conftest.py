"""Fakes behind the imap-gw backend interfaces, and a running server on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postmesh.common.backend import BackendUnavailable
from postmesh.common.tls import settings_server_context
from postmesh.imap_gw.backend import (
    FlagsMode,
    MailboxInfo,
    MailboxNotFound,
    MessageMeta,
    MessageNotFound,
    MessagePage,
)
from postmesh.imap_gw.server import ImapServer
from postmesh.imap_gw.settings import ImapSettings

USER = "alice@example.org"
PASSWORD = 's3cret pass\\"word'  # has a space, a backslash and a quote


def make_message(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.com>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


@dataclass
class FakeMailbox:
    name: str
    uidvalidity: int = 1234
    next_uid: int = 1
    messages: dict[int, tuple[MessageMeta, bytes]] = field(default_factory=dict)
    special_use: str = ""
    subscribed: bool = True

    def add(self, content: bytes, flags: Sequence[str] = (), date: int = 1_700_000_000) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = (MessageMeta(uid, tuple(flags), len(content), date, uid), content)
        return uid

    def info(self) -> MailboxInfo:
        metas = [m for m, _ in self.messages.values()]
        return MailboxInfo(
            name=self.name,
            uidvalidity=self.uidvalidity,
            uidnext=self.next_uid,
            messages=len(metas),
            unseen=sum(1 for m in metas if "\\Seen" not in m.flags),
            special_use=self.special_use,
            subscribed=self.subscribed,
        )


class FakeStore:
    """In-memory MailStore; ``down`` makes every call fail as an unreachable store would."""

    def __init__(self) -> None:
        self.boxes: dict[str, dict[str, FakeMailbox]] = {}
        self.calls: list[tuple[str, object]] = []
        self.down = False

    async def provision_user(self, user: str) -> None:
        self.calls.append(("provision_user", user))
        if self.down:
            raise BackendUnavailable("store down")
        if "INBOX" not in self.boxes.get(user, {}):
            self.mailbox(user, "INBOX")

    def mailbox(self, user: str, name: str, **kw: object) -> FakeMailbox:
        box = self.boxes.setdefault(user, {}).get(name)
        if box is None:
            box = FakeMailbox(name, **kw)  # type: ignore[arg-type]
            self.boxes[user][name] = box
        return box

    def _box(self, user: str, name: str) -> FakeMailbox:
        if self.down:
            raise BackendUnavailable("store down")
        box = self.boxes.get(user, {}).get(name)
        if box is None:
            raise MailboxNotFound(name)
        return box

    async def get_mailbox(self, user: str, mailbox: str) -> MailboxInfo:
        self.calls.append(("get_mailbox", mailbox))
        return self._box(user, mailbox).info()

    async def list_mailboxes(self, user: str) -> Sequence[MailboxInfo]:
        if self.down:
            raise BackendUnavailable("store down")
        return [b.info() for b in self.boxes.get(user, {}).values()]

    async def list_messages(
        self, user: str, mailbox: str, after_uid: int, limit: int
    ) -> MessagePage:
        self.calls.append(("list_messages", (after_uid, limit)))
        box = self._box(user, mailbox)
        uids = sorted(u for u in box.messages if u > after_uid)
        return MessagePage([box.messages[u][0] for u in uids[:limit]], len(uids) > limit)

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        self.calls.append(("get_content", uid))
        box = self._box(user, mailbox)
        if uid not in box.messages:
            raise MessageNotFound(uid)
        return box.messages[uid][1]

    async def store_flags(
        self, user: str, mailbox: str, uids: Sequence[int], mode: FlagsMode, flags: Sequence[str]
    ) -> Sequence[MessageMeta]:
        self.calls.append(("store_flags", (tuple(uids), mode, tuple(flags))))
        box = self._box(user, mailbox)
        out = []
        for uid in uids:
            if uid not in box.messages:
                continue
            meta, content = box.messages[uid]
            new = set(meta.flags)
            if mode is FlagsMode.ADD:
                new |= set(flags)
            elif mode is FlagsMode.REMOVE:
                new -= set(flags)
            else:
                new = set(flags)
            meta = MessageMeta(
                uid, tuple(sorted(new)), meta.size, meta.internal_date, meta.modseq + 1
            )
            box.messages[uid] = (meta, content)
            out.append(meta)
        return out

    async def expunge(self, user: str, mailbox: str) -> Sequence[int]:
        self.calls.append(("expunge", mailbox))
        box = self._box(user, mailbox)
        gone = [u for u, (m, _) in box.messages.items() if "\\Deleted" in m.flags]
        for u in gone:
            del box.messages[u]
        return gone


class FakeAuth:
    def __init__(self) -> None:
        self.users = {USER: PASSWORD}
        self.calls: list[tuple[str, str, str]] = []
        self.down = False

    async def authenticate(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> str | None:
        self.calls.append((username, remote_ip, mechanism))
        if self.down:
            raise BackendUnavailable("auth down")
        return username.lower() if self.users.get(username.lower()) == password else None


@dataclass
class Env:
    """A running server with its fakes; tests reach the helpers through it (conftest is not
    importable under --import-mode=importlib)."""

    server: ImapServer
    store: FakeStore
    auth: FakeAuth
    settings: ImapSettings
    inbox: FakeMailbox
    user: str = USER
    password: str = PASSWORD

    def make_message(self, subject: str, body: str = "Hello.\r\n") -> bytes:
        return make_message(subject, body)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls_port(self) -> int:
        return self.server.tls_port


def settings_for(tmp_path: Path, **overrides: object) -> ImapSettings:
    values: dict[str, object] = {
        "imap_port": 0,
        "imaps_port": 0,
        "data_dir": tmp_path,
        "imap_auth_failure_delay_seconds": 0,
        "imap_list_page_size": 2,  # small pages, so listing has to follow "more"
    }
    values.update(overrides)
    return ImapSettings(**values)  # type: ignore[arg-type]


async def start_env(settings: ImapSettings) -> Env:
    store, auth = FakeStore(), FakeAuth()
    inbox = store.mailbox(USER, "INBOX")
    inbox.add(make_message("first"), flags=["\\Seen"])
    inbox.add(make_message("second", "Line one.\r\nLine two.\r\n"))
    inbox.add(make_message("third"), flags=["\\Flagged"])
    store.mailbox(USER, "Sent", special_use="\\Sent")
    store.mailbox(USER, "Archive/2024", subscribed=False)
    server = ImapServer(settings, store, auth, settings_server_context(settings))
    await server.start()
    return Env(server, store, auth, settings, inbox)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await start_env(settings_for(tmp_path))
    try:
        yield e
    finally:
        await e.server.stop()


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Env]]]:
    """Start a server with settings overridden (``await make_env(imap_max_bad_commands=3)``)."""
    started: list[Env] = []

    async def make(**overrides: object) -> Env:
        e = await start_env(settings_for(tmp_path, **overrides))
        started.append(e)
        return e

    try:
        yield make
    finally:
        for e in started:
            await e.server.stop()
