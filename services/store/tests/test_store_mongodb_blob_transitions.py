"""Blob state changes on a MongoDB API whose updates are not atomic (FerretDB 1.x reads the
document, decides and writes it back, ADR 37): the store takes a per-blob lock around each, so
two deleters of one blob in a process never both claim it (a CI run lost a live message's
content that way: one deleter's delete landed after the other had given the blob back)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from postmesh.store.mongodb.blobs import COMPLETE, DELETING, MongoBlobStore

Doc = dict[str, Any]


def _matches(doc: Doc, query: Doc) -> bool:
    return all(doc.get(k) == v for k, v in query.items())


class _NonAtomic:
    """One collection whose conditional writes read, yield to the event loop, then write, as
    FerretDB 1.x's do across its connections."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs = {d["_id"]: dict(d) for d in docs}
        self.claims = 0

    async def find_one(self, query: Doc, projection: Doc | None = None) -> Doc | None:
        return next((dict(d) for d in self.docs.values() if _matches(d, query)), None)

    async def find_one_and_update(self, query: Doc, update: Doc, **_: Any) -> Doc | None:
        found = await self.find_one(query)
        await asyncio.sleep(0)  # another writer's read sees the same document
        if found is None:
            return None
        found.update(update["$set"])
        self.docs[found["_id"]] = found
        if found.get("state") == DELETING:
            self.claims += 1
        return dict(found)

    async def update_one(self, query: Doc, update: Doc) -> Any:
        found = await self.find_one(query)
        await asyncio.sleep(0)
        if found is not None:
            found.update(update.get("$set", {}))
            for k in update.get("$unset", {}):
                found.pop(k, None)
            self.docs[found["_id"]] = found

    async def delete_one(self, query: Doc) -> Any:
        found = await self.find_one(query)
        await asyncio.sleep(0)
        if found is not None:
            self.docs.pop(found["_id"], None)

    async def delete_many(self, query: Doc) -> Any:
        for key in [k for k, d in self.docs.items() if _matches(d, query)]:
            self.docs.pop(key, None)


async def test_two_deleters_of_one_blob_claim_it_once() -> None:
    blobs = _NonAtomic([{"_id": "b1", "size": 5, "state": COMPLETE, "key": "b1-k", "data": b"x"}])
    refs, chunks, index = _NonAtomic([]), _NonAtomic([]), _NonAtomic([{"_id": "b1"}])
    store = MongoBlobStore(cast(Any, blobs), cast(Any, chunks), cast(Any, refs), cast(Any, index))
    results = await asyncio.gather(
        store.delete_if_unreferenced("b1"), store.delete_if_unreferenced("b1")
    )
    assert sorted(results) == [False, True]
    assert blobs.claims == 1 and blobs.docs == {} and index.docs == {}
