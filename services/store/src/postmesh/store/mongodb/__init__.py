"""Distributed backend: the MongoDB API through PyMongo's asyncio client.

Works on MongoDB 6+ and on FerretDB 1.24, so it uses only single-document atomic updates
($inc, $setOnInsert, findAndModify) and unique indexes: no multi-document transactions, no
change streams, no $lookup/$facet, no dotted or $-prefixed field names, no nested arrays.
"""

from postmesh.store.mongodb.repository import MongoStoreRepository

__all__ = ["MongoStoreRepository"]
