"""SQLite schema of the store. Bump SCHEMA_VERSION and add a migration step when it changes."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2

SCHEMA = """
-- A user is known once provisioned. next_uidvalidity hands out UIDVALIDITY values, so a
-- mailbox recreated under an old name always gets a new, larger one (RFC 9051 2.3.1.1).
-- Quota limits: NULL means the service default, 0 unlimited (RFC 9208).
CREATE TABLE IF NOT EXISTS users (
    user TEXT PRIMARY KEY,
    next_uidvalidity INTEGER NOT NULL,
    storage_limit INTEGER,
    message_limit INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER NOT NULL,
    special_use TEXT NOT NULL DEFAULT '',
    noselect INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    UNIQUE (user, name)
);
-- Subscriptions are names, not mailboxes: they may name none (RFC 9051 6.3.7).
CREATE TABLE IF NOT EXISTS subscriptions (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user, name)
) WITHOUT ROWID;
-- Content-addressed (sha256 hex). refcount counts messages; pinned_until protects a PutBlob
-- upload that no message references yet.
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refcount INTEGER NOT NULL,
    pinned_until INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, n)
) WITHOUT ROWID;
-- Parsed once per content: serialized MessageMeta (uid 0) and the search document.
CREATE TABLE IF NOT EXISTS blob_index (
    blob_id TEXT PRIMARY KEY REFERENCES blobs (id),
    meta BLOB NOT NULL,
    search BLOB NOT NULL,
    sent_day INTEGER
) WITHOUT ROWID;
-- flags: JSON array in canonical order; seen/deleted mirror two of them for counts and EXPUNGE.
CREATE TABLE IF NOT EXISTS messages (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id),
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    flags TEXT NOT NULL,
    seen INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    internal_date INTEGER NOT NULL,
    size INTEGER NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs (id),
    -- Days since 1970-01-01 of the Date header (SEARCH SENT*), NULL if none.
    sent_day INTEGER,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq);
-- Expunge tombstones: UID and the MODSEQ of its expunge, for QRESYNC VANISHED (RFC 7162 3.2.10).
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id),
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq);
-- Idempotency of Deliver: one row per (queue id, user, mailbox), kept after an expunge so a
-- redelivered record does not bring a deleted message back.
CREATE TABLE IF NOT EXISTS deliveries (
    queue_id TEXT NOT NULL,
    user TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    uid INTEGER NOT NULL,
    uidvalidity INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (queue_id, user, mailbox)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_created ON deliveries (created_at);
"""

# Version 1 had a subscribed column on mailboxes, no users, no noselect parents, no index.
_MIGRATE_1_TO_2 = """
ALTER TABLE mailboxes ADD COLUMN noselect INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN sent_day INTEGER;
CREATE TABLE subscriptions (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user, name)
) WITHOUT ROWID;
INSERT INTO subscriptions (user, name) SELECT user, name FROM mailboxes WHERE subscribed = 1;
ALTER TABLE mailboxes DROP COLUMN subscribed;
CREATE TABLE users (
    user TEXT PRIMARY KEY,
    next_uidvalidity INTEGER NOT NULL,
    storage_limit INTEGER,
    message_limit INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO users (user, next_uidvalidity, created_at)
    SELECT user, MAX(uidvalidity) + 1, MIN(created_at) FROM mailboxes GROUP BY user;
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION (each step in one transaction)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"store schema version {version} is newer than this store")
    if version == 1:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATE_1_TO_2.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("PRAGMA user_version=2")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
