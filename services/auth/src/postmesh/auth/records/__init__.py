"""What auth keeps beside domains and password hashes: SCRAM keys, login-failure counters,
aliases, catch-alls and account state. One interface, a SQLite and a MongoDB implementation,
in collections/tables of their own next to the account repository's."""

from postmesh.auth.records.base import Alias, FailureCount, LoginState, RecordRepository

__all__ = ["Alias", "FailureCount", "LoginState", "RecordRepository"]
