"""Users, mailboxes and subscriptions on the MongoDB API.

Every operation here holds the user lock (``locks.py``) and first rolls forward the user's
interrupted operations (``intents.py``). DELETE and RENAME write an intent first, so a crash
half-way is finished, never left half-done.
"""

from __future__ import annotations

import time

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from postmesh.store.errors import AlreadyExists, FailedPrecondition, NotFound
from postmesh.store.hierarchy import DEFAULT_MAILBOXES, child_range, parents, renamed
from postmesh.store.model import (
    INBOX,
    CopyResult,
    CreateResult,
    DeleteResult,
    Mailbox,
    ProvisionResult,
    RecentClaim,
    RenameResult,
)
from postmesh.store.mongodb import watermark
from postmesh.store.mongodb.base import Doc, first_recent_uid, key_of
from postmesh.store.mongodb.intents import PURGE, RENAME, MongoIntents
from postmesh.store.mongodb.locks import user_key

RENEW_EVERY = 200  # documents between lease renewals of a long-running intent


class MongoMailboxes(MongoIntents):
    async def _provision(self, user: str, listing: bool = True) -> ProvisionResult:
        # Gateways provision at login, which makes it the natural moment to finish what an
        # interrupted operation of this user left.
        async with self._locks.hold(user_key(user)):
            await self._recover(user)
            return await self._provision_locked(user, listing)

    async def _provision_locked(self, user: str, listing: bool = True) -> ProvisionResult:
        """Steps, each idempotent: user document (not yet provisioned) -> each missing default
        mailbox, subscribed -> provisioned. A crash in between is finished by the next call."""
        doc = await self._user_doc(user)
        if doc is not None and doc.get("provisioned"):
            return ProvisionResult(await self._list_locked(user) if listing else [])
        if doc is None:
            try:
                await self._users.insert_one(
                    # The counter starts at the clock: above any time-based UIDVALIDITY.
                    {"_id": user, "next_uidvalidity": max(1, int(time.time())),
                     "provisioned": False}
                )  # fmt: skip
            except DuplicateKeyError:
                pass
        created = []
        for name, special_use in DEFAULT_MAILBOXES:
            if await self._insert_mailbox(user, name, special_use) is not None:
                created.append(name)
            await self._subscribe(user, name, True)
        await self._users.update_one({"_id": user}, {"$set": {"provisioned": True}})
        return ProvisionResult(await self._list_locked(user) if listing else [], created)

    async def _create_missing_parents(self, user: str, name: str) -> list[str]:
        created = []
        for parent in parents(name):
            if await self._insert_mailbox(user, parent) is not None:
                created.append(parent)
        return created

    async def _create_mailbox(self, user: str, name: str, special_use: str) -> CreateResult:
        async with self._locks.hold(user_key(user)):
            await self._require_user(user)
            await self._recover(user)
            existing = await self._mailboxes.find_one({"user": user, "name": name})
            if existing is not None and not existing.get("noselect"):
                raise AlreadyExists(f"mailbox {name!r} exists")
            created = await self._create_missing_parents(user, name)
            if existing is not None:
                # A \Noselect parent becomes a mailbox again, under a new UIDVALIDITY.
                await self._mailboxes.update_one(
                    {"_id": existing["_id"]},
                    {"$set": {"noselect": False, "special_use": special_use,
                              "uidvalidity": await self._next_uidvalidity(user)}},
                )  # fmt: skip
            elif await self._insert_mailbox(user, name, special_use) is None:
                raise AlreadyExists(f"mailbox {name!r} exists")
            box = await self._load_mailbox(await self._mailbox_doc(user, name))
            return CreateResult(box, [*created, name])

    async def _delete_mailbox(self, user: str, name: str) -> DeleteResult:
        async with self._locks.hold(user_key(user)):
            await self._recover(user)
            box = await self._mailbox_doc(user, name, selectable=False)
            children = await self._has_children(user, name)
            if box.get("noselect") and children:
                # RFC 9051 section 6.3.5: deleting a \Noselect name with inferiors is an error.
                raise FailedPrecondition(f"mailbox {name!r} is \\Noselect and has inferiors")
            intent = await self._start_intent(
                user, PURGE, mailbox_id=box["_id"], name=name, keep=children
            )
            deleted = await self._run_purge(intent)
            await self._finish_intent(intent)
            if children:
                return DeleteResult(deleted, [], kept_as_noselect=True)
            return DeleteResult(deleted, [name, *await self._prune_noselect_parents(user, name)])

    async def _run_purge(self, intent: Doc) -> int:
        """Mailbox made \\Noselect or deleted first (no new message can arrive), then every
        message's blob reference dropped and the message removed. Returns live messages
        removed."""
        mailbox_id: ObjectId = intent["mailbox_id"]
        async with self._locks.hold(mailbox_id):
            if intent["keep"]:
                await self._mailboxes.update_one(
                    {"_id": mailbox_id}, {"$set": {"noselect": True, "special_use": ""}}
                )
            else:
                await self._mailboxes.delete_one({"_id": mailbox_id})
            docs = await self._messages.find(
                {"mailbox_id": mailbox_id}, {"blob_id": 1, "expunged": 1, "released": 1}
            ).to_list(None)
            for i, doc in enumerate(docs, 1):
                if not doc.get("released"):
                    await self.blobs.release(doc["_id"], doc["blob_id"])
                await self._messages.delete_one({"_id": doc["_id"]})
                if i % RENEW_EVERY == 0:
                    await self._renew_intent(intent)
        return sum(1 for d in docs if not d.get("expunged"))

    async def _prune_noselect_parents(self, user: str, name: str) -> list[str]:
        removed = []
        for parent in reversed(parents(name)):
            doc = await self._mailboxes.find_one({"user": user, "name": parent})
            if doc is None or not doc.get("noselect") or await self._has_children(user, parent):
                break
            await self._mailboxes.delete_one({"_id": doc["_id"], "noselect": True})
            removed.append(parent)
        return removed

    async def _rename_mailbox(self, user: str, old: str, new: str) -> RenameResult:
        async with self._locks.hold(user_key(user)):
            await self._recover(user)
            if old == INBOX:
                return await self._rename_inbox(user, new)
            await self._mailbox_doc(user, old, selectable=False)
            low, high = child_range(old)
            tree = (
                await self._mailboxes.find(
                    {"user": user, "$or": [{"name": old}, {"name": {"$gte": low, "$lt": high}}]},
                    {"name": 1},
                )
                .sort("name", ASCENDING)
                .to_list(None)
            )
            pairs = [(d["name"], renamed(d["name"], old, new)) for d in tree]
            for _, target in pairs:
                if await self._mailboxes.find_one({"user": user, "name": target}, {"_id": 1}):
                    raise AlreadyExists(f"mailbox {target!r} exists")
            created = await self._create_missing_parents(user, new)
            intent = await self._start_intent(user, RENAME, old=old, new=new)
            await self._run_rename(intent)
            await self._finish_intent(intent)
            box = await self._load_mailbox(await self._mailbox_doc(user, new, selectable=False))
            return RenameResult(box, pairs, created)

    async def _run_rename(self, intent: Doc) -> None:
        """Each mailbox of the tree renamed by a conditional update (idempotent), then the
        subscriptions, then \\Noselect parents left empty removed."""
        user, old, new = intent["user"], intent["old"], intent["new"]
        low, high = child_range(old)
        tree = await self._mailboxes.find(
            {"user": user, "$or": [{"name": old}, {"name": {"$gte": low, "$lt": high}}]},
            {"name": 1},
        ).to_list(None)
        for doc in tree:
            await self._mailboxes.update_one(
                {"_id": doc["_id"], "name": doc["name"]},
                {"$set": {"name": renamed(doc["name"], old, new)}},
            )
        subs = await self._subscriptions.find(
            {"user": user, "$or": [{"name": old}, {"name": {"$gte": low, "$lt": high}}]}
        ).to_list(None)
        for sub in subs:
            await self._subscribe(user, renamed(sub["name"], old, new), True)
            await self._subscriptions.delete_one({"_id": sub["_id"]})
        await self._prune_noselect_parents(user, old)

    async def _rename_inbox(self, user: str, new: str) -> RenameResult:
        """RFC 9051 section 6.3.6: INBOX's messages move to a new mailbox (a MOVE, with its
        intent); INBOX and its inferiors stay."""
        if await self._mailboxes.find_one({"user": user, "name": new}, {"_id": 1}):
            raise AlreadyExists(f"mailbox {new!r} exists")
        inbox = await self._mailbox_doc(user, INBOX)
        created = await self._create_missing_parents(user, new)
        dst = await self._insert_mailbox(user, new)
        if dst is None:
            raise AlreadyExists(f"mailbox {new!r} exists")
        live = await self._messages.find(
            {"mailbox_id": inbox["_id"], "expunged": False}, {"uid": 1}
        ).to_list(None)
        moved: CopyResult | None = None
        if live:
            moved = await self._copy_docs(
                user, inbox, dst, sorted(int(d["uid"]) for d in live), move=True
            )
        box = await self._load_mailbox(await self._mailbox_doc(user, new))
        return RenameResult(box, [(INBOX, new)], created, moved)

    async def _subscribe(self, user: str, name: str, on: bool) -> None:
        sid = key_of(user, name)
        if on:
            try:
                await self._subscriptions.update_one(
                    {"_id": sid}, {"$setOnInsert": {"user": user, "name": name}}, upsert=True
                )
            except DuplicateKeyError:
                pass
        else:
            await self._subscriptions.delete_one({"_id": sid})

    async def _set_subscription(self, user: str, name: str, subscribed: bool) -> None:
        await self._require_user(user)
        await self._subscribe(user, name, subscribed)

    async def _list_subscriptions(self, user: str) -> list[str]:
        await self._require_user(user)
        docs = await self._subscriptions.find({"user": user}).to_list(None)
        return sorted(str(d["name"]) for d in docs)

    async def _list_mailboxes(self, user: str) -> list[Mailbox]:
        await self._require_user(user)
        return await self._list_locked(user)

    async def _list_locked(self, user: str) -> list[Mailbox]:
        docs = await self._mailboxes.find({"user": user}).to_list(None)
        docs.sort(key=lambda d: str(d["name"]).encode())
        counts = await self._counts({"user": user})
        subs = {d["name"] for d in await self._subscriptions.find({"user": user}).to_list(None)}
        superiors = {p for d in docs for p in parents(d["name"])}
        recent = await self._recent_counts(docs)
        return [
            self._to_mailbox(
                d,
                counts.get(d["_id"], (0, 0, 0, 0)),
                subscribed=d["name"] in subs,
                children=d["name"] in superiors,
                recent=recent.get(d["_id"], 0),
            )
            for d in docs
        ]

    async def _get_mailbox(self, user: str, name: str) -> Mailbox:
        return await self._load_mailbox(await self._mailbox_doc(user, name, selectable=False))

    async def _claim_recent(self, user: str, mailbox: str, up_to_uid: int) -> RecentClaim:
        """RFC 3501 section 2.3.2, by ``$max`` under the mailbox's lock (atomic on MongoDB
        itself): of two claims, the later one answers the other's raised value as its first,
        so no UID is claimed twice. Only visible UIDs are claimed (``watermark.py``): a message
        still being written is recent for whoever claims after it."""
        doc = await self._mailbox_doc(user, mailbox, selectable=False)
        uidnext, _ = watermark.visible(doc, time.time())
        last = uidnext - 1 if up_to_uid == 0 else min(up_to_uid, uidnext - 1)
        first = first_recent_uid(doc)
        if doc.get("noselect"):
            last = first - 1  # no messages, nothing to claim (a SELECT of it fails on its own)
        if last >= first:
            async with self._locks.hold(doc["_id"]):
                before = await self._raise_first_recent(doc["_id"], last)
            if before is None:
                raise NotFound(f"mailbox {mailbox!r} of {user} does not exist")
            first = before
        return RecentClaim(first, last, int(doc["uidvalidity"]))
