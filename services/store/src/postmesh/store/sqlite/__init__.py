"""Embedded backend: one SQLite file (WAL), every operation one transaction."""

from postmesh.store.sqlite.repository import SqliteStoreRepository

__all__ = ["SqliteStoreRepository"]
