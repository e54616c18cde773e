"""Reading many documents by ``_id`` the way the server serves from an index (ADR 0036).

MongoDB answers ``{_id: {$in: [...]}}`` from the ``_id`` index. FerretDB 1.24 does not push
``$in`` down to PostgreSQL: it reads the whole collection and filters it itself, which for the
content metadata (``store_blob_index``, every user's messages) made each FETCH of headers cost
the whole collection. An equality on ``_id`` it does push down, and PostgreSQL serves it from a
GIN index once an operator has created those of ``pg_indexes.py``. So on FerretDB, when an
``_id`` lookup of the collection is index-served (asked through ``explain``, again every
``RECHECK_SECONDS``), the documents are read one query each, a few at a time; otherwise (and on
MongoDB) with one ``$in`` per ``BATCH``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from postmesh.store.mongodb.pg_indexes import PREFIX

Doc = dict[str, Any]
BATCH = 500  # ids per $in query
CONCURRENCY = 16  # single-id queries in flight
RECHECK_SECONDS = 600.0  # the planner's choice changes as the table grows (or gets the index)


def _nodes(plan: Doc) -> list[Doc]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def served_one_by_one(explained: Doc) -> bool:
    """Whether an explained ``{_id: x}`` find is FerretDB's, pushed down, and answered by one of
    the GIN indexes."""
    if "ferretdbVersion" not in explained.get("serverInfo", {}):
        return False
    plan = explained.get("queryPlanner", {}).get("Plan")
    if not explained.get("filterPushdown") or not isinstance(plan, dict):
        return False
    return any(str(n.get("Index Name", "")).startswith(PREFIX) for n in _nodes(plan))


class ByIdReader:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection
        self._one_by_one = False
        self._checked_at = -RECHECK_SECONDS

    async def find(self, ids: list[Any], projection: Doc | None = None) -> list[Doc]:
        if not ids:
            return []
        if time.monotonic() - self._checked_at >= RECHECK_SECONDS:
            await self._check(ids[0])
        if self._one_by_one:
            return await self._one_each(ids, projection)
        out: list[Doc] = []
        for i in range(0, len(ids), BATCH):
            out += await self.collection.find(
                {"_id": {"$in": ids[i : i + BATCH]}}, projection
            ).to_list(None)
        return out

    async def _check(self, sample: Any) -> None:
        self._checked_at = time.monotonic()
        try:
            explained = await self.collection.database.command(
                {"explain": {"find": self.collection.name, "filter": {"_id": sample}}}
            )
        except OperationFailure:  # explain not allowed or not known: the portable way
            self._one_by_one = False
            return
        self._one_by_one = served_one_by_one(explained)

    async def _one_each(self, ids: list[Any], projection: Doc | None) -> list[Doc]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: Any) -> Doc | None:
            async with gate:
                return await self.collection.find_one({"_id": i}, projection)

        return [d for d in await asyncio.gather(*(one(i) for i in ids)) if d is not None]
