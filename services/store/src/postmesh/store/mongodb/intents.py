"""Intents: how operations that touch many documents stay all-or-nothing without transactions.

Before COPY, MOVE, DELETE or RENAME writes anything, it records what it is about to do in an
intent document; every step after is idempotent (deterministic ids, conditional updates), and
the intent is deleted when the operation is complete. If the operation dies half-way (crash,
lost connection), the next operation of the same user -- or the next start of the store --
finds the intent and rolls it forward to completion. So a MOVE never ends with the message in
both mailboxes or in neither, and a RENAME never leaves half a hierarchy behind.

An intent carries a lease so that, with several store replicas on MongoDB, one replica never
rolls forward an operation another one is still running; the owner renews it on long runs.
Roll-forward is done under the user lock, which every intent-making operation holds.
"""

from __future__ import annotations

import time
import uuid
from abc import abstractmethod
from typing import Any

from postmesh.common.logging import get_logger, kv
from postmesh.store.model import CopyResult
from postmesh.store.mongodb.base import Doc, MongoBase

log = get_logger(__name__)

# How long an intent belongs to the replica that made it, unless renewed.
LEASE_SECONDS = 120.0
PURGE, RENAME, COPY = "purge", "rename", "copy"


class MongoIntents(MongoBase):
    intent_lease_seconds = LEASE_SECONDS

    async def _start_intent(
        self, user: str, kind: str, intent_id: str | None = None, **params: Any
    ) -> Doc:
        intent: Doc = {
            "_id": intent_id or uuid.uuid4().hex, "user": user, "kind": kind,
            "lease_until": time.time() + self.intent_lease_seconds, "created_at": time.time(), **params,
        }  # fmt: skip
        await self._intents.insert_one(intent)
        return intent

    async def _renew_intent(self, intent: Doc) -> None:
        await self._intents.update_one(
            {"_id": intent["_id"]},
            {"$set": {"lease_until": time.time() + self.intent_lease_seconds}},
        )

    async def _finish_intent(self, intent: Doc) -> None:
        if intent.get("reserved"):  # a COPY's quota reservation: its messages exist now
            await self._drop_reservation(intent["_id"])
        await self._intents.delete_one({"_id": intent["_id"]})

    async def _recover(self, user: str | None = None) -> int:
        """Roll forward the expired intents (of ``user``, or all at start); caller holds the
        user lock when ``user`` is given. Returns how many were finished."""
        query: Doc = {"lease_until": {"$lt": time.time()}}
        if user is not None:
            query["user"] = user
        done = 0
        for intent in await self._intents.find(query).sort("created_at", 1).to_list(None):
            # Take it over (an unexpired lease means another replica just did).
            taken = await self._intents.update_one(
                {"_id": intent["_id"], "lease_until": intent["lease_until"]},
                {"$set": {"lease_until": time.time() + self.intent_lease_seconds}},
            )
            if not taken.modified_count:
                continue
            log.warning(
                "rolling forward an interrupted operation",
                extra=kv(user=intent["user"], kind=intent["kind"], intent=intent["_id"]),
            )
            await self._roll_forward(intent)
            await self._finish_intent(intent)
            done += 1
        return done

    async def _roll_forward(self, intent: Doc) -> None:
        kind = intent["kind"]
        if kind == PURGE:
            await self._run_purge(intent)
        elif kind == RENAME:
            await self._run_rename(intent)
        elif kind == COPY:
            await self._run_copy(intent)
        else:
            log.error("unknown intent kind; left in place", extra=kv(kind=kind))

    @abstractmethod
    async def _run_purge(self, intent: Doc) -> int: ...

    @abstractmethod
    async def _run_rename(self, intent: Doc) -> None: ...

    @abstractmethod
    async def _run_copy(self, intent: Doc) -> dict[int, int]: ...

    @abstractmethod
    async def _copy_docs(
        self, user: str, src: Doc, dst: Doc, uids: list[int], *, move: bool
    ) -> CopyResult: ...
