"""Fakes behind the imap-gw backend interfaces, and a running server on 127.0.0.1:0."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from store_env import PASSWORD, USER, FakeAuth, StoreEnv, make_message, settings_for, store_env

from postmesh.common.backend import BackendUnavailable
from postmesh.common.store_client.convert import structure
from postmesh.common.tls import settings_server_context
from postmesh.imap_gw.backend import (
    AppendResult,
    Changes,
    CopyResult,
    FlagPage,
    FlagsMode,
    FlagsResult,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxNotFound,
    MailboxRejected,
    MailboxTree,
    MessageMeta,
    MessageNotFound,
    MessagePage,
    MessageStructure,
    OverQuota,
    Quota,
    SearchRejected,
    SearchResult,
    StoreRefused,
)
from postmesh.imap_gw.parser.search import SearchKey
from postmesh.imap_gw.search_proto import to_proto
from postmesh.imap_gw.server import ImapServer
from postmesh.imap_gw.settings import ImapSettings
from postmesh.store import indexing
from postmesh.store import search as store_search
from postmesh.store import validation as store_validation
from postmesh.store.errors import InvalidArgument
from postmesh.store.mime import extract_meta, sent_day


@dataclass
class FakeMailbox:
    name: str
    uidvalidity: int = 1234
    next_uid: int = 1
    messages: dict[int, tuple[MessageMeta, bytes]] = field(default_factory=dict)
    special_use: str = ""
    subscribed: bool = True
    # The mailbox's HIGHESTMODSEQ (one counter per mailbox, RFC 7162 §3.1) and the expunged
    # UIDs with the MODSEQ of their expunge (QRESYNC tombstones), as the real store keeps.
    modseq: int = 0
    tombstones: dict[int, int] = field(default_factory=dict)
    noselect: bool = False  # a deleted parent kept for its inferiors (RFC 9051 §6.3.5)

    def bump(self) -> int:
        self.modseq += 1
        return self.modseq

    def add(self, content: bytes, flags: Sequence[str] = (), date: int = 1_700_000_000) -> int:
        uid = self.next_uid
        self.next_uid += 1
        meta = MessageMeta(uid, tuple(flags), len(content), date, self.bump())
        self.messages[uid] = (meta, content)
        return uid

    def set_flags(self, uid: int, flags: Sequence[str]) -> None:
        """A change made elsewhere (another session, another replica)."""
        meta, content = self.messages[uid]
        new = MessageMeta(uid, tuple(flags), meta.size, meta.internal_date, self.bump())
        self.messages[uid] = (new, content)

    def remove(self, uids: Sequence[int]) -> list[int]:
        gone = [u for u in uids if u in self.messages]
        if gone:
            modseq = self.bump()
            for u in gone:
                del self.messages[u]
                self.tombstones[u] = modseq
        return gone

    def info(self) -> MailboxInfo:
        metas = [m for m, _ in self.messages.values()]
        return MailboxInfo(
            name=self.name,
            uidvalidity=self.uidvalidity,
            uidnext=self.next_uid,
            messages=len(metas),
            unseen=sum(1 for m in metas if "\\Seen" not in m.flags),
            highestmodseq=self.modseq,
            special_use=self.special_use,
            subscribed=self.subscribed,
            deleted=sum(1 for m in metas if "\\Deleted" in m.flags),
            size=sum(m.size for m in metas),
            noselect=self.noselect,
        )


class FakeStore:
    """In-memory MailStore; ``down`` makes every call fail as an unreachable store would."""

    def __init__(self) -> None:
        self.boxes: dict[str, dict[str, FakeMailbox]] = {}
        self.calls: list[tuple[str, object]] = []
        self.down = False
        # Called with (user, mailbox) after every change, as the store publishes a
        # MailboxEvent; the env points it at the server's session registry.
        self.on_change: Callable[..., object] | None = None
        # Subscriptions to names that are not (or no longer) mailboxes (RFC 9051 §6.3.7).
        self.subscriptions: dict[str, set[str]] = {}
        self.quota = Quota(0, 0, 0, 0)
        self._uidvalidity = 5000
        # Storage quota in bytes over all of a user's mailboxes (None: unlimited), as the
        # store's QuotaExceeded.
        self.quota_bytes: int | None = None

    def changed(self, user: str, mailbox: str) -> None:
        if self.on_change is not None:
            self.on_change(user, mailbox)

    # -- mailbox management (the store's semantics, RFC 9051 §6.3.4-8) ----------------------

    def _valid(self, name: str) -> str:
        if self.down:
            raise BackendUnavailable("store down")
        try:
            return store_validation.mailbox_name(name, allow_empty=False)
        except InvalidArgument as e:
            raise MailboxRejected(str(e)) from e

    def _new_box(self, user: str, name: str, special_use: str = "") -> FakeMailbox:
        self._uidvalidity += 1
        box = FakeMailbox(name, uidvalidity=self._uidvalidity, special_use=special_use)
        box.subscribed = False
        self.boxes.setdefault(user, {})[name] = box
        return box

    def _parents(self, user: str, name: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self.boxes.get(user, {}):
                self._new_box(user, parent)

    def _has_children(self, user: str, name: str) -> bool:
        return any(n.startswith(name + "/") for n in self.boxes.get(user, {}))

    async def create_mailbox(self, user: str, mailbox: str, special_use: str = "") -> MailboxInfo:
        self.calls.append(("create_mailbox", (mailbox, special_use)))
        name = self._valid(mailbox)
        existing = self.boxes.get(user, {}).get(name)
        if existing is not None and not existing.noselect:
            raise MailboxExists(name)
        self._parents(user, name)
        box = self._new_box(user, name, special_use)
        if existing is not None:
            box.subscribed = existing.subscribed
        return box.info()

    async def delete_mailbox(self, user: str, mailbox: str) -> int:
        self.calls.append(("delete_mailbox", mailbox))
        name = self._valid(mailbox)
        box = self._box(user, name)
        children = self._has_children(user, name)
        if box.noselect and children:
            raise MailboxHasChildren(name)
        count = len(box.messages)
        if children:
            box.remove(list(box.messages))
            box.noselect, box.special_use = True, ""
        else:
            del self.boxes[user][name]
            if box.subscribed:  # the subscription outlives the mailbox
                self.subscriptions.setdefault(user, set()).add(name)
        self.changed(user, name)
        return count

    async def rename_mailbox(self, user: str, mailbox: str, new_name: str) -> MailboxInfo:
        self.calls.append(("rename_mailbox", (mailbox, new_name)))
        old, new = self._valid(mailbox), self._valid(new_name)
        src = self._box(user, old)
        boxes = self.boxes[user]
        if new in (old, "INBOX"):
            raise MailboxExists(new)
        if new.startswith(old + "/"):
            raise MailboxRejected(f"cannot rename {old!r} to its own inferior {new!r}")
        if old == "INBOX":
            if new in boxes:
                raise MailboxExists(new)
            self._parents(user, new)
            dst = self._new_box(user, new)
            for uid in sorted(src.messages):
                meta, content = src.messages[uid]
                dst.add(content, meta.flags, meta.internal_date)
            src.remove(list(src.messages))
            self.changed(user, "INBOX")
            return dst.info()
        tree = sorted(n for n in boxes if n == old or n.startswith(old + "/"))
        pairs = [(n, new + n[len(old) :]) for n in tree]
        for _, target in pairs:
            if target in boxes:
                raise MailboxExists(target)
        self._parents(user, new)
        for name, target in pairs:
            box = boxes.pop(name)
            box.name = target
            boxes[target] = box
        for name, target in pairs:
            if self.on_change is not None:
                self.on_change(user, name, target)
        return boxes[new].info()

    async def set_subscription(self, user: str, mailbox: str, subscribed: bool) -> None:
        self.calls.append(("set_subscription", (mailbox, subscribed)))
        name = self._valid(mailbox)
        box = self.boxes.get(user, {}).get(name)
        subs = self.subscriptions.setdefault(user, set())
        if box is not None:
            box.subscribed = subscribed
        elif subscribed:
            subs.add(name)
        if not subscribed:
            subs.discard(name)

    async def list_mailbox_tree(self, user: str) -> MailboxTree:
        self.calls.append(("list_mailbox_tree", user))
        if self.down:
            raise BackendUnavailable("store down")
        boxes = self.boxes.get(user, {})
        subs = {b.name for b in boxes.values() if b.subscribed}
        subs |= self.subscriptions.get(user, set()) - set(boxes)
        return MailboxTree([b.info() for b in boxes.values()], sorted(subs))

    async def get_quota(self, user: str) -> Quota:
        self.calls.append(("get_quota", user))
        if self.down:
            raise BackendUnavailable("store down")
        boxes = self.boxes.get(user, {}).values()
        used = sum(m.size for b in boxes for m, _ in b.messages.values())
        count = sum(len(b.messages) for b in boxes)
        return Quota(used, self.quota.storage_limit, count, self.quota.message_limit)

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

    async def list_flags(self, user: str, mailbox: str, after_uid: int, limit: int) -> FlagPage:
        self.calls.append(("list_flags", (after_uid, limit)))
        box = self._box(user, mailbox)
        uids = sorted(u for u in box.messages if u > after_uid)
        metas = [box.messages[u][0] for u in uids[:limit]]
        sets: dict[tuple[str, ...], int] = {}
        index = [sets.setdefault(m.flags, len(sets)) for m in metas]
        return FlagPage(
            [m.uid for m in metas], [m.modseq for m in metas], index, list(sets), len(uids) > limit
        )

    async def get_content(self, user: str, mailbox: str, uid: int) -> bytes:
        self.calls.append(("get_content", uid))
        box = self._box(user, mailbox)
        if uid not in box.messages:
            raise MessageNotFound(uid)
        return box.messages[uid][1]

    async def get_structure(
        self, user: str, mailbox: str, uids: Sequence[int]
    ) -> Sequence[MessageStructure]:
        """Parsed as the store parses at delivery (its own ``extract_meta``), converted as the
        gRPC backend converts GetMessageMeta."""
        self.calls.append(("get_structure", tuple(uids)))
        box = self._box(user, mailbox)
        out = []
        for uid in uids:
            if uid in box.messages:
                meta = extract_meta(box.messages[uid][1])
                meta.uid = uid
                out.append(structure(meta))
        return out

    async def store_flags(
        self, user: str, mailbox: str, uids: Sequence[int], mode: FlagsMode, flags: Sequence[str]
    ) -> Sequence[MessageMeta]:
        self.calls.append(("store_flags", (tuple(uids), mode, tuple(flags))))
        return (await self._store(user, mailbox, uids, mode, flags, 0)).updated

    async def _store(
        self,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        mode: FlagsMode,
        flags: Sequence[str],
        unchanged_since: int,
    ) -> FlagsResult:
        box = self._box(user, mailbox)
        out: list[MessageMeta] = []
        modified: list[int] = []
        modseq = 0
        for uid in uids:
            if uid not in box.messages:
                continue
            meta, content = box.messages[uid]
            if unchanged_since and meta.modseq > unchanged_since:
                modified.append(uid)
                continue
            new = set(meta.flags)
            if mode is FlagsMode.ADD:
                new |= set(flags)
            elif mode is FlagsMode.REMOVE:
                new -= set(flags)
            else:
                new = set(flags)
            if new != set(meta.flags):
                # One new MODSEQ for the messages one STORE changed (RFC 7162 §3.1).
                modseq = modseq or box.bump()
                meta = MessageMeta(uid, tuple(sorted(new)), meta.size, meta.internal_date, modseq)
                box.messages[uid] = (meta, content)
            out.append(meta)
        if modseq:
            self.changed(user, mailbox)
        return FlagsResult(out, modified)

    async def store_flags_unchanged_since(
        self,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        mode: FlagsMode,
        flags: Sequence[str],
        unchanged_since: int,
    ) -> FlagsResult:
        self.calls.append(("store_flags_unchanged_since", (tuple(uids), unchanged_since)))
        return await self._store(user, mailbox, uids, mode, flags, unchanged_since)

    async def get_changes(self, user: str, mailbox: str, since_modseq: int) -> Changes:
        self.calls.append(("get_changes", since_modseq))
        box = self._box(user, mailbox)
        changed = [box.messages[u][0] for u in sorted(box.messages)]
        return Changes(
            [m for m in changed if m.modseq > since_modseq],
            sorted(u for u, ms in box.tombstones.items() if ms > since_modseq),
            box.modseq,
            box.uidvalidity,
        )

    async def expunge_uids(self, user: str, mailbox: str, uids: Sequence[int]) -> Sequence[int]:
        self.calls.append(("expunge_uids", tuple(uids)))
        box = self._box(user, mailbox)
        doomed = [u for u in uids if u in box.messages and "\\Deleted" in box.messages[u][0].flags]
        gone = box.remove(doomed)
        if gone:
            self.changed(user, mailbox)
        return gone

    async def expunge(self, user: str, mailbox: str) -> Sequence[int]:
        self.calls.append(("expunge", mailbox))
        box = self._box(user, mailbox)
        gone = box.remove(sorted(u for u, (m, _) in box.messages.items() if "\\Deleted" in m.flags))
        if gone:
            self.changed(user, mailbox)
        return gone

    async def search(self, user: str, mailbox: str, criteria: SearchKey) -> SearchResult:
        """The store's own evaluator over the fake messages, so SEARCH tests check the real
        semantics (the criteria go through the same proto conversion as the gRPC backend)."""
        self.calls.append(("search", criteria))
        box = self._box(user, mailbox)
        key = to_proto(criteria)
        try:
            indexing.validate(key)  # the store's own check (the servicer answers INVALID_ARGUMENT)
        except InvalidArgument as e:
            raise SearchRejected(str(e)) from e
        msgs = []
        for meta, content in box.messages.values():
            parsed = extract_meta(content)
            msgs.append(
                store_search.SearchableMessage(
                    meta.uid,
                    meta.flags,
                    meta.internal_date,
                    meta.size,
                    meta.modseq,
                    sent_day=sent_day(parsed),
                    document=store_search.build_search_document(content, parsed),
                )
            )
        ctx = store_search.SearchContext(max_uid=max(box.messages, default=0))
        uids = store_search.search(key, msgs, ctx)
        found = set(uids)
        highest = max((m.modseq for m, _ in box.messages.values() if m.uid in found), default=0)
        return SearchResult(uids, highest)

    def _check_quota(self, user: str, more: int) -> None:
        used = sum(
            m.size for b in self.boxes.get(user, {}).values() for m, _ in b.messages.values()
        )
        if self.quota_bytes is not None and used + more > self.quota_bytes:
            raise OverQuota("storage quota exceeded")

    async def append(
        self,
        user: str,
        mailbox: str,
        flags: Sequence[str],
        internal_date: int,
        size: int,
        content: AsyncIterator[bytes],
    ) -> AppendResult:
        """As the store's Append: mailbox and quota checked on the header, before the content
        is read; the content must match the declared size."""
        self.calls.append(("append", (mailbox, tuple(flags), internal_date, size)))
        box = self._box(user, mailbox)
        self._check_quota(user, size)
        chunks = [chunk async for chunk in content]
        self.calls.append(("append_chunks", tuple(len(c) for c in chunks)))
        data = b"".join(chunks)
        if len(data) != size:
            raise StoreRefused(f"declared size {size} but {len(data)} bytes were sent")
        uid = box.add(data, flags, internal_date or 1_800_000_000)
        self.changed(user, mailbox)
        return AppendResult(box.uidvalidity, uid)

    async def _copy(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str, move: bool
    ) -> CopyResult:
        src, dst = self._box(user, mailbox), self._box(user, destination)
        found = [u for u in sorted(uids) if u in src.messages]
        if not move:
            self._check_quota(user, sum(src.messages[u][0].size for u in found))
        dest = []
        for u in found:
            meta, content = src.messages[u]
            dest.append(dst.add(content, meta.flags, meta.internal_date))
        gone = src.remove(found) if move else []
        if dest:
            self.changed(user, destination)
        if gone:
            self.changed(user, mailbox)
        return CopyResult(dst.uidvalidity, found, dest, gone)

    async def copy_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        self.calls.append(("copy_messages", (mailbox, tuple(uids), destination)))
        return await self._copy(user, mailbox, uids, destination, move=False)

    async def move_messages(
        self, user: str, mailbox: str, uids: Sequence[int], destination: str
    ) -> CopyResult:
        self.calls.append(("move_messages", (mailbox, tuple(uids), destination)))
        return await self._copy(user, mailbox, uids, destination, move=True)


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

    # Changes made elsewhere (a delivery, another replica): the fake store changes, then the
    # sessions hear of it as from a mailbox event.
    def deliver(self, subject: str, flags: Sequence[str] = (), mailbox: str = "INBOX") -> int:
        uid = self.store.mailbox(self.user, mailbox).add(make_message(subject), flags)
        self.store.changed(self.user, mailbox)
        return uid

    def set_flags(self, uid: int, flags: Sequence[str], mailbox: str = "INBOX") -> None:
        self.store.mailbox(self.user, mailbox).set_flags(uid, flags)
        self.store.changed(self.user, mailbox)

    def expunge_elsewhere(self, uids: Sequence[int], mailbox: str = "INBOX") -> None:
        self.store.mailbox(self.user, mailbox).remove(uids)
        self.store.changed(self.user, mailbox)


async def start_env(settings: ImapSettings) -> Env:
    store, auth = FakeStore(), FakeAuth()
    inbox = store.mailbox(USER, "INBOX")
    inbox.add(make_message("first"), flags=["\\Seen"])
    inbox.add(make_message("second", "Line one.\r\nLine two.\r\n"))
    inbox.add(make_message("third"), flags=["\\Flagged"])
    store.mailbox(USER, "Sent", special_use="\\Sent")
    store.mailbox(USER, "Archive/2024", subscribed=False)
    server = ImapServer(settings, store, auth, settings_server_context(settings))
    store.on_change = server.registry.notify
    await server.start()
    return Env(server, store, auth, settings, inbox)


def uses_fake_store(request: pytest.FixtureRequest) -> bool:
    """Modules not yet moved to the real store in-process say ``USES_FAKE_STORE = True``."""
    return bool(getattr(request.module, "USES_FAKE_STORE", False))


@pytest.fixture
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env | StoreEnv]:
    """The server on the real store in-process (store_env), or on FakeStore for the modules
    that still use it."""
    if not uses_fake_store(request):
        async with store_env(tmp_path) as real:
            yield real
        return
    e = await start_env(settings_for(tmp_path))
    try:
        yield e
    finally:
        await e.server.stop()


@pytest.fixture
async def make_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Env | StoreEnv]]]:
    """Start a server with settings overridden (``await make_env(imap_max_bad_commands=3)``)."""
    fake = uses_fake_store(request)
    async with AsyncExitStack() as stack:
        started: list[Env] = []
        count = itertools.count()

        async def make(**overrides: object) -> Env | StoreEnv:
            if not fake:
                where = tmp_path / f"env{next(count)}"
                return await stack.enter_async_context(store_env(where, **overrides))
            e = await start_env(settings_for(tmp_path, **overrides))
            started.append(e)
            return e

        try:
            yield make
        finally:
            for e in started:
                await e.server.stop()
