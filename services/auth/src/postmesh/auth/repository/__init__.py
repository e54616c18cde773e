"""Accounts repository: one interface, a SQLite and a MongoDB implementation."""

from postmesh.auth.repository.base import (
    AccountRepository,
    AlreadyExists,
    DkimKey,
    Domain,
    NotFound,
    User,
)

__all__ = ["AccountRepository", "AlreadyExists", "DkimKey", "Domain", "NotFound", "User"]
