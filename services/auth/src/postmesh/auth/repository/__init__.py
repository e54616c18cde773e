"""Accounts repository: one interface, a SQLite and a MongoDB implementation."""

from postmesh.auth.repository.base import (
    AccountRepository,
    AdminToken,
    AlreadyExists,
    DkimKey,
    Domain,
    NotFound,
    User,
)

__all__ = [
    "AccountRepository",
    "AdminToken",
    "AlreadyExists",
    "DkimKey",
    "Domain",
    "NotFound",
    "User",
]
