"""Accounts on the MongoDB API (PyMongo asyncio; works on MongoDB 6+ and FerretDB 1.24)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from postmesh.auth.repository.base import (
    AccountRepository,
    AdminToken,
    AlreadyExists,
    DkimKey,
    Domain,
    NotFound,
    User,
)


class MongoAccountRepository(AccountRepository):
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
        self._db = self._client[database]
        self._domains = self._db["auth_domains"]
        self._users = self._db["auth_users"]
        # One document per key, _id "<domain>/<selector>": inserts and deletes only.
        self._dkim = self._db["auth_dkim_keys"]
        # _id is the token's public id; the token itself is only there as its digest.
        self._tokens = self._db["auth_admin_tokens"]

    async def open(self) -> None:
        # _id is the canonical name, so uniqueness needs no extra index.
        await self._users.create_index("domain")
        await self._dkim.create_index("domain")

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def add_domain(self, name: str, dkim_keys: Sequence[DkimKey] = ()) -> Domain:
        try:
            await self._domains.insert_one({"_id": name})
        except DuplicateKeyError as e:
            raise AlreadyExists(f"domain {name} exists") from e
        # Not atomic with the domain (no multi-document transactions on FerretDB): a crash in
        # between leaves a domain without keys, which auth's start-up gives keys to.
        if dkim_keys:
            await self._dkim.insert_many([_key_doc(name, k) for k in dkim_keys])
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

    async def delete_user(self, address: str) -> bool:
        return bool((await self._users.delete_one({"_id": address})).deleted_count)

    async def list_users(self, domain: str | None = None) -> list[User]:
        query = {} if domain is None else {"domain": domain}
        return [
            User(d["_id"], d["password_hash"]) async for d in self._users.find(query).sort("_id", 1)
        ]

    async def add_dkim_key(self, domain: str, key: DkimKey) -> None:
        if await self.get_domain(domain) is None:
            raise NotFound(f"domain {domain} is not a local domain")
        try:
            await self._dkim.insert_one(_key_doc(domain, key))
        except DuplicateKeyError as e:
            raise AlreadyExists(f"dkim selector {key.selector} of {domain} exists") from e

    async def list_dkim_keys(self, domain: str) -> list[DkimKey]:
        keys = [_key_of(d) async for d in self._dkim.find({"domain": domain})]
        return sorted(keys, key=lambda k: (k.created_at, k.selector))

    async def delete_dkim_key(self, domain: str, selector: str) -> bool:
        result = await self._dkim.delete_one({"_id": _key_id(domain, selector)})
        return bool(result.deleted_count)

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        await self._users.update_one({"_id": address}, {"$set": {"password_hash": password_hash}})

    async def add_admin_token(self, token: AdminToken) -> None:
        doc = {
            "_id": token.id,
            "token_digest": token.token_digest,
            "role": token.role,
            "domains": list(token.domains),
            "label": token.label,
            "created_at": token.created_at,
            "expires_at": token.expires_at,
        }
        try:
            await self._tokens.insert_one(doc)
        except DuplicateKeyError as e:
            raise AlreadyExists(f"admin token {token.id} exists") from e

    async def get_admin_token(self, token_id: str) -> AdminToken | None:
        doc = await self._tokens.find_one({"_id": token_id})
        return _token_of(doc) if doc else None

    async def list_admin_tokens(self) -> list[AdminToken]:
        tokens = [_token_of(d) async for d in self._tokens.find()]
        return sorted(tokens, key=lambda t: (t.created_at, t.id))

    async def delete_admin_token(self, token_id: str) -> bool:
        return bool((await self._tokens.delete_one({"_id": token_id})).deleted_count)


def _key_id(domain: str, selector: str) -> str:
    return f"{domain}/{selector}"


def _key_doc(domain: str, k: DkimKey) -> dict[str, Any]:
    return {
        "_id": _key_id(domain, k.selector),
        "domain": domain,
        "selector": k.selector,
        "algorithm": k.algorithm,
        "private_key": k.private_key,
        "public_key": k.public_key,
        "created_at": k.created_at,
        "activates_at": k.activates_at,
    }


def _key_of(d: dict[str, Any]) -> DkimKey:
    return DkimKey(
        d["selector"],
        d["algorithm"],
        bytes(d["private_key"]),
        d["public_key"],
        float(d["created_at"]),
        float(d["activates_at"]),
    )


def _token_of(d: dict[str, Any]) -> AdminToken:
    expires = d.get("expires_at")
    return AdminToken(
        d["_id"], d["token_digest"], d["role"], tuple(d["domains"]), d["label"],
        float(d["created_at"]), None if expires is None else float(expires),
    )  # fmt: skip
