"""Password hashing with argon2id (argon2-cffi); hashing runs in a thread, it is CPU-bound."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" defaults


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    return bool(_hasher.check_needs_rehash(stored))


# Verified against when the user does not exist, so a miss costs as much as a wrong password
# and timing does not reveal which addresses exist.
DUMMY_HASH = _hasher.hash("postmesh-timing-equaliser")
