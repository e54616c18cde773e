"""Auth records on the MongoDB API (MongoDB 6+ and FerretDB 1.24: single-document atomic
updates only, no aggregation-pipeline updates)."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from postmesh.auth.records.base import Alias, FailureCount, RecordRepository
from postmesh.common.sasl.scram import ScramKeys

# The change stamp of what recipients resolve to (RecordRepository.change_stamp).
_STAMP = "resolutions"


class MongoRecordRepository(RecordRepository):
    def __init__(
        self,
        url: str | None,
        database: str,
        *,
        client: AsyncMongoClient[dict[str, Any]] | None = None,
    ) -> None:
        """``client``: one made from the settings (credentials, TLS); else one for ``url``."""
        self._client: AsyncMongoClient[dict[str, Any]] = client or AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        db = self._client[database]
        self._scram = db["auth_scram_keys"]
        self._secrets = db["auth_secrets"]
        self._failures = db["auth_login_failures"]
        self._aliases = db["auth_aliases"]
        self._catch_all = db["auth_catch_all"]
        self._disabled = db["auth_disabled_users"]
        self._stamps = db["auth_change_stamps"]

    async def open(self) -> None:
        await self._aliases.create_index("domain")

    async def close(self) -> None:
        await self._client.close()

    async def get_scram(self, address: str) -> ScramKeys | None:
        d = await self._scram.find_one({"_id": address})
        if d is None:
            return None
        return ScramKeys(
            bytes(d["salt"]), int(d["iterations"]), bytes(d["stored_key"]), bytes(d["server_key"])
        )

    async def set_scram(self, address: str, keys: ScramKeys | None) -> None:
        if keys is None:
            await self._scram.delete_one({"_id": address})
            return
        await self._scram.replace_one(
            {"_id": address},
            {
                "salt": keys.salt,
                "iterations": keys.iterations,
                "stored_key": keys.stored_key,
                "server_key": keys.server_key,
            },
            upsert=True,
        )

    async def secret(self, name: str, candidate: bytes) -> bytes:
        try:
            await self._secrets.insert_one({"_id": name, "value": candidate})
        except DuplicateKeyError:
            pass
        doc = await self._secrets.find_one({"_id": name})
        assert doc is not None
        return bytes(doc["value"])

    async def add_failure(self, key: str, now: float, window: float) -> int:
        # Within the window: $inc. Otherwise restart the window; two replicas restarting it at
        # once may lose one count, never more (FerretDB has no pipeline updates for a CASE).
        doc = await self._failures.find_one_and_update(
            {"_id": key, "window_start": {"$gte": now - window}},
            {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return int(doc["failures"])
        await self._failures.update_one(
            {"_id": key},
            {"$set": {"failures": 1, "window_start": now}, "$setOnInsert": {"locked_until": 0.0}},
            upsert=True,
        )
        return 1

    async def lock(self, key: str, until: float) -> None:
        await self._failures.update_one({"_id": key}, {"$max": {"locked_until": until}})

    async def get_failures(self, key: str) -> FailureCount | None:
        d = await self._failures.find_one({"_id": key})
        return FailureCount(int(d["failures"]), float(d.get("locked_until", 0))) if d else None

    async def clear_failures(self, key: str) -> None:
        await self._failures.delete_one({"_id": key})

    async def set_alias(self, address: str, targets: tuple[str, ...]) -> None:
        await self._aliases.replace_one(
            {"_id": address},
            {"domain": address.rpartition("@")[2], "targets": list(targets)},
            upsert=True,
        )
        await self._touch()

    async def get_alias(self, address: str) -> Alias | None:
        d = await self._aliases.find_one({"_id": address})
        return Alias(d["_id"], tuple(d["targets"])) if d else None

    async def delete_alias(self, address: str) -> bool:
        deleted = bool((await self._aliases.delete_one({"_id": address})).deleted_count)
        await self._touch()
        return deleted

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        query = {} if domain is None else {"domain": domain}
        return [
            Alias(d["_id"], tuple(d["targets"]))
            async for d in self._aliases.find(query).sort("_id", 1)
        ]

    async def set_catch_all(self, domain: str, target: str | None) -> None:
        if target is None:
            await self._catch_all.delete_one({"_id": domain})
        else:
            await self._catch_all.replace_one({"_id": domain}, {"target": target}, upsert=True)
        await self._touch()

    async def get_catch_all(self, domain: str) -> str | None:
        d = await self._catch_all.find_one({"_id": domain})
        return str(d["target"]) if d else None

    async def set_disabled(self, address: str, disabled: bool) -> None:
        if disabled:
            await self._disabled.replace_one({"_id": address}, {}, upsert=True)
        else:
            await self._disabled.delete_one({"_id": address})
        await self._touch()

    async def is_disabled(self, address: str) -> bool:
        return await self._disabled.find_one({"_id": address}) is not None

    async def _touch(self) -> None:
        # After the write: a replica that reads the new stamp reads the write too. A crash in
        # between leaves caches stale until their entries expire (ResolutionCache's TTL).
        await self._stamps.replace_one({"_id": _STAMP}, {"value": uuid.uuid4().hex}, upsert=True)

    async def change_stamp(self) -> str:
        d = await self._stamps.find_one({"_id": _STAMP})
        return str(d["value"]) if d else ""
