"""Password hashing with argon2id (argon2-cffi); hashing runs in a thread, it is CPU-bound.

Passwords are prepared with SASLprep (RFC 4013) as SCRAM's are (RFC 5802 §2.2), so one
password works the same over PLAIN, LOGIN, USER/PASS and SCRAM-SHA-256 whatever Unicode form a
client types it in (RFC 4616 §2, RFC 6856 §3 for POP3's UTF8 USER): "café" in NFD matches a
password set in NFC."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from postmesh.common.sasl.saslprep import SaslPrepError, saslprep

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 "low memory" defaults


def prepared(password: str) -> str:
    """SASLprep of ``password``; as given when SASLprep refuses it (a prohibited character):
    such a password still works as typed, only without the Unicode equivalences."""
    try:
        return saslprep(password)
    except SaslPrepError:
        return password


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, prepared(password))


def _verify_one(stored: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _verify(stored: str, password: str) -> bool:
    """The password as typed first (every ASCII password, and hashes made before passwords
    were prepared), then its SASLprep form when that differs (a second argon2 run, only for
    a non-ASCII or oddly spaced password that did not match as typed)."""
    if _verify_one(stored, password):
        return True
    other = prepared(password)
    return other != password and _verify_one(stored, other)


async def verify_password(stored: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, stored, password)


def needs_rehash(stored: str) -> bool:
    return bool(_hasher.check_needs_rehash(stored))


# Verified against when the user does not exist, so a miss costs as much as a wrong password
# and timing does not reveal which addresses exist.
DUMMY_HASH = _hasher.hash("postmesh-timing-equaliser")
