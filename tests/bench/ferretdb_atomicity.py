"""Does FerretDB apply single-document updates atomically? (ADR 7, ADR 37)

Starts a real FerretDB 1.24 (from the integration infra) on PostgreSQL and on SQLite and races
``WRITERS`` concurrent writers, each on a connection of its own (as several store replicas would
be), against one document:
- ``$inc``: ``update_one`` with ``{"$inc": {"n": 1}}``; atomic means the counter ends at WRITERS;
- allocation: ``find_one_and_update`` with ``$inc`` returning the document before, as the store
  allocates UIDs; atomic means WRITERS distinct values;
- conditional claim: ``find_one_and_update({"_id": x, "owner": None}, {"$set": owner})``;
  atomic means exactly one writer wins.
Prints one line per handler and round; all traffic stays on 127.0.0.1.

    uv run --frozen python -m tests.bench.ferretdb_atomicity [--rounds 5] [--writers 50]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument

from tests.integration.infra import FerretDB


async def _race(url: str, writers: int) -> tuple[int, int, int]:
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(url, directConnection=True, maxPoolSize=1) for _ in range(writers)
    ]
    try:
        coll = clients[0]["atomicity"]["race"]
        await coll.delete_many({})
        await coll.insert_many([{"_id": "inc", "n": 0}, {"_id": "alloc", "n": 0}, {"_id": "c"}])
        for c in clients:  # connect first, so the writers start together
            await c.admin.command("ping")

        def race(c: AsyncMongoClient[dict[str, Any]]) -> Any:
            return c["atomicity"]["race"]

        await asyncio.gather(
            *(race(c).update_one({"_id": "inc"}, {"$inc": {"n": 1}}) for c in clients)
        )
        befores = await asyncio.gather(
            *(
                race(c).find_one_and_update(
                    {"_id": "alloc"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.BEFORE
                )
                for c in clients
            )
        )
        claims = await asyncio.gather(
            *(
                race(c).find_one_and_update(
                    {"_id": "c", "owner": None},
                    {"$set": {"owner": i}},
                    return_document=ReturnDocument.AFTER,
                )
                for i, c in enumerate(clients)
            )
        )
        final = await coll.find_one({"_id": "inc"})
        assert final is not None
        distinct = len({d["n"] for d in befores if d is not None})
        winners = sum(1 for d in claims if d is not None)
        return int(final["n"]), distinct, winners
    finally:
        for c in clients:
            await c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--handler", choices=["pg", "sqlite"], action="append")
    args = parser.parse_args()
    for handler in args.handler or ["pg", "sqlite"]:
        with FerretDB(handler=handler) as db:
            for r in range(args.rounds):
                n, distinct, winners = asyncio.run(_race(db.url, args.writers))
                print(
                    f"FerretDB {db.version} {handler}, round {r + 1}: {args.writers} concurrent "
                    f"$inc -> {n}; {args.writers} $inc allocations -> {distinct} distinct values; "
                    f"conditional claim -> {winners} winner(s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
