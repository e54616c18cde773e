"""Accounts on the MongoDB API (PyMongo asyncio; works on MongoDB 6+ and FerretDB 1.24)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from postmesh.auth.repository.base import AccountRepository, AlreadyExists, Domain, NotFound, User


class MongoAccountRepository(AccountRepository):
    def __init__(self, url: str, database: str) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, serverSelectionTimeoutMS=5000
        )
        self._db = self._client[database]
        self._domains = self._db["auth_domains"]
        self._users = self._db["auth_users"]

    async def open(self) -> None:
        # _id is the canonical name, so uniqueness needs no extra index.
        await self._users.create_index("domain")

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def add_domain(self, name: str) -> Domain:
        try:
            await self._domains.insert_one({"_id": name})
        except DuplicateKeyError as e:
            raise AlreadyExists(f"domain {name} exists") from e
        return Domain(name)

    async def get_domain(self, name: str) -> Domain | None:
        doc = await self._domains.find_one({"_id": name})
        return Domain(doc["_id"]) if doc else None

    async def list_domains(self) -> list[Domain]:
        return [Domain(d["_id"]) async for d in self._domains.find().sort("_id", 1)]

    async def add_user(self, address: str, password_hash: str) -> User:
        domain = address.rpartition("@")[2]
        if await self.get_domain(domain) is None:
            raise NotFound(f"domain {domain} is not a local domain")
        try:
            await self._users.insert_one(
                {"_id": address, "domain": domain, "password_hash": password_hash}
            )
        except DuplicateKeyError as e:
            raise AlreadyExists(f"user {address} exists") from e
        return User(address, password_hash)

    async def get_user(self, address: str) -> User | None:
        doc = await self._users.find_one({"_id": address})
        return User(doc["_id"], doc["password_hash"]) if doc else None

    async def list_users(self, domain: str | None = None) -> list[User]:
        query = {} if domain is None else {"domain": domain}
        return [
            User(d["_id"], d["password_hash"]) async for d in self._users.find(query).sort("_id", 1)
        ]

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        await self._users.update_one({"_id": address}, {"$set": {"password_hash": password_hash}})
