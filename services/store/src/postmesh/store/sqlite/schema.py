"""SQLite schema of the store. Bump SCHEMA_VERSION and add a migration step when it changes."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from postmesh.store.indexing import headers_of_document
from postmesh.store.sqlite.search_sql import INDEXED_MARK, UNINDEXED, UNINDEXED_FACT, encode_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 9

# In SCHEMA, and made by the 4->5 migration. GetMessageMeta (FETCH ENVELOPE, BODYSTRUCTURE,
# headers) reads only ``meta``, a few hundred octets beside a search document of kilobytes in
# the same row: in this narrow copy its lookups touch a few small pages instead of the large
# rows' pages (1,000 messages: about 3x less SQLite time measured; ADR 0039).
_CREATE_BLOB_META_INDEX = "CREATE INDEX IF NOT EXISTS blob_index_meta ON blob_index (blob_id, meta)"

# In SCHEMA, and made by the 2->3 migration (version 2 kept header values only inside the
# search documents).
_CREATE_BLOB_HEADERS = """
CREATE TABLE IF NOT EXISTS blob_headers (
    blob_id TEXT NOT NULL,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (blob_id, name, n)
) WITHOUT ROWID
"""

# Each mailbox's message count, \Seen and \Deleted counts and total size, kept by SQLite itself
# in the transaction that changes a message (ADR 0046): every write path counts, none can
# forget, and the counts stay exact. STATUS/SELECT and every quota check (twice per APPEND) read
# them instead of summing every message of the mailbox or user (O(n): ~1-2 ms at 10,000).
_COUNTER_COLUMNS = ("n_messages", "n_seen", "n_deleted", "n_bytes")
_COUNT_IN = (
    "UPDATE mailboxes SET n_messages = n_messages + 1, n_seen = n_seen + NEW.seen,"
    " n_deleted = n_deleted + NEW.deleted, n_bytes = n_bytes + NEW.size"
    " WHERE id = NEW.mailbox_id"
)
_COUNT_OUT = (
    "UPDATE mailboxes SET n_messages = n_messages - 1, n_seen = n_seen - OLD.seen,"
    " n_deleted = n_deleted - OLD.deleted, n_bytes = n_bytes - OLD.size"
    " WHERE id = OLD.mailbox_id"
)
_COUNTER_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS messages_count_in AFTER INSERT ON messages"
    f" BEGIN {_COUNT_IN}; END",
    f"CREATE TRIGGER IF NOT EXISTS messages_count_out AFTER DELETE ON messages"
    f" BEGIN {_COUNT_OUT}; END",
    "CREATE TRIGGER IF NOT EXISTS messages_count_change"
    " AFTER UPDATE OF mailbox_id, seen, deleted, size ON messages"
    " WHEN OLD.mailbox_id != NEW.mailbox_id OR OLD.seen != NEW.seen"
    " OR OLD.deleted != NEW.deleted OR OLD.size != NEW.size"
    f" BEGIN {_COUNT_OUT}; {_COUNT_IN}; END",
)
_RECOUNT = """
UPDATE mailboxes SET
    n_messages = (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = mailboxes.id),
    n_seen = (SELECT COALESCE(SUM(seen), 0) FROM messages m WHERE m.mailbox_id = mailboxes.id),
    n_deleted = (
        SELECT COALESCE(SUM(deleted), 0) FROM messages m WHERE m.mailbox_id = mailboxes.id
    ),
    n_bytes = (SELECT COALESCE(SUM(size), 0) FROM messages m WHERE m.mailbox_id = mailboxes.id)
"""

SCHEMA = (
    """
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
    -- Highest MODSEQ of the expunge tombstones the janitor removed (leftovers.py).
    vanished_floor INTEGER NOT NULL DEFAULT 0,
    -- Kept by the messages_count_* triggers (_COUNTER_TRIGGERS).
    n_messages INTEGER NOT NULL DEFAULT 0,
    n_seen INTEGER NOT NULL DEFAULT 0,
    n_deleted INTEGER NOT NULL DEFAULT 0,
    n_bytes INTEGER NOT NULL DEFAULT 0,
    -- IMAP4rev1 \\Recent (RFC 3501 2.3.2): no session has claimed the messages from this UID on.
    first_recent_uid INTEGER NOT NULL DEFAULT 1,
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
-- What the janitor looks for: expired upload pins, and blobs nothing holds any more.
CREATE INDEX IF NOT EXISTS blobs_pinned ON blobs (pinned_until) WHERE pinned_until > 0;
CREATE INDEX IF NOT EXISTS blobs_unreferenced ON blobs (pinned_until) WHERE refcount <= 0;
CREATE TABLE IF NOT EXISTS blob_chunks (
    blob_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, n)
) WITHOUT ROWID;
-- Parsed once per content: serialized MessageMeta (uid 0) and the search document;
-- wire_ready 1 when the content is its own POP3/SMTP wire form (indexing.in_wire_form), 0 when
-- not, NULL when not known (indexed before version 7).
CREATE TABLE IF NOT EXISTS blob_index (
    blob_id TEXT PRIMARY KEY REFERENCES blobs (id),
    meta BLOB NOT NULL,
    search BLOB NOT NULL,
    sent_day INTEGER,
    wire_ready INTEGER
) WITHOUT ROWID;
-- The indexed header fields of a content (search.INDEXED_HEADERS), one row per value, folded
-- and UTF-8 encoded, so SEARCH FROM/TO/CC/BCC/SUBJECT/HEADER match them in SQL instead of
-- decoding every search document; plus a row named '' for "indexed". Written with
-- blob_index, in the same transaction.
"""
    + _CREATE_BLOB_HEADERS
    + ";\n"
    + _CREATE_BLOB_META_INDEX
    + """;
-- flags: JSON array in canonical order; seen/deleted mirror two of them for counts and EXPUNGE.
-- wire_ready: blob_index.wire_ready, kept on each message so reading content needs no index.
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
    wire_ready INTEGER,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_blob ON messages (blob_id);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq);
-- Expunge tombstones: UID and the MODSEQ of its expunge, for QRESYNC VANISHED (RFC 7162 3.2.10),
-- kept for the tombstone retention from expunged_at (Unix seconds).
CREATE TABLE IF NOT EXISTS expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id),
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    expunged_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mailbox_id, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS expunged_age ON expunged (expunged_at);
-- Facts about the file as a whole, by name. 'unindexed_messages': some message's content was
-- stored before indexing and has no header rows (set by the 7->8 migration only; every later
-- write indexes what it stores), so a header SEARCH must also return those for the evaluator.
CREATE TABLE IF NOT EXISTS store_facts (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
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
    + "".join(f"{t};\n" for t in _COUNTER_TRIGGERS)
)

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


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Version 3 kept tombstones without their time and mailboxes without a vanished floor;
    the tombstones it left start their retention at the upgrade. (A file older than the
    tombstone table gets the new one from SCHEMA.)"""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "expunged" in tables and "expunged_at" not in _columns(conn, "expunged"):
        conn.execute("ALTER TABLE expunged ADD COLUMN expunged_at INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE expunged SET expunged_at = ?", (int(time.time()),))
    if "vanished_floor" not in _columns(conn, "mailboxes"):
        conn.execute("ALTER TABLE mailboxes ADD COLUMN vanished_floor INTEGER NOT NULL DEFAULT 0")


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """The narrow index of the metadata (one pass over blob_index at the first open)."""
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob_index'"
    ).fetchone():
        conn.execute(_CREATE_BLOB_META_INDEX)


def _migrate_5_to_6(conn: sqlite3.Connection) -> None:
    """The mailboxes' counters, counted once from their messages, then kept by triggers."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "mailboxes" not in tables:
        return
    have = _columns(conn, "mailboxes")
    for column in _COUNTER_COLUMNS:
        if column not in have:
            conn.execute(f"ALTER TABLE mailboxes ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    if "messages" in tables:
        conn.execute(_RECOUNT)
        for trigger in _COUNTER_TRIGGERS:
            conn.execute(trigger)


def _migrate_6_to_7(conn: sqlite3.Connection) -> None:
    """The wire-form bit (ADR 0042), unknown (NULL) for what is stored already: the gateway
    scans those as before. A column present already is left as it is."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("messages", "blob_index"):
        if table in tables and "wire_ready" not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN wire_ready INTEGER")


def _migrate_7_to_8(conn: sqlite3.Connection) -> None:
    """Whether any stored message lacks header rows (one pass at the first open after the
    upgrade): only then does a header SEARCH look for such messages, a look-up per message
    that cost as much as the search itself (ADR 0065)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS store_facts (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        " WITHOUT ROWID"
    )
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "messages" not in tables:
        return
    if (
        "blob_headers" in tables
        and not conn.execute(f"SELECT 1 FROM messages m WHERE {UNINDEXED} LIMIT 1").fetchone()
    ):
        return
    conn.execute(
        "INSERT OR REPLACE INTO store_facts (name, value) VALUES (?, 1)", (UNINDEXED_FACT,)
    )


def _migrate_8_to_9(conn: sqlite3.Connection) -> None:
    """IMAP4rev1 \\Recent. What is stored already counts as recent until a session claims it
    (RFC 3501 section 2.3.2: a message no session is known to have been told of SHOULD be)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "mailboxes" in tables and "first_recent_uid" not in _columns(conn, "mailboxes"):
        conn.execute("ALTER TABLE mailboxes ADD COLUMN first_recent_uid INTEGER NOT NULL DEFAULT 1")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def insert_headers(conn: sqlite3.Connection, blob_id: str, headers: list[tuple[str, str]]) -> None:
    """The header rows of a content, after a marker row (empty name, never a field name) that
    says "indexed": a lookup in this small table, where probing blob_index would read its
    large rows."""
    conn.executemany(
        "INSERT OR IGNORE INTO blob_headers (blob_id, name, n, value) VALUES (?, ?, ?, ?)",
        [
            (blob_id, INDEXED_MARK, 0, b""),
            *((blob_id, name, n, encode_text(value)) for n, (name, value) in enumerate(headers)),
        ],
    )


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Index the header fields of every stored content from its search document (a one-time
    pass at the first open after the upgrade, so no mail is searched differently)."""
    conn.execute(_CREATE_BLOB_HEADERS)
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob_index'"
    ).fetchone():
        return  # a file from before indexing: every message is parsed on first use
    done = 0
    cursor = conn.execute("SELECT blob_id, search FROM blob_index")
    while batch := cursor.fetchmany(500):
        for blob_id, data in batch:
            insert_headers(conn, blob_id, headers_of_document(bytes(data)))
        done += len(batch)
    if done:
        log.info("indexed the header fields of %d stored messages for SEARCH", done)


def _step(
    conn: sqlite3.Connection, version: int, run: str | Callable[[sqlite3.Connection], None]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if callable(run):
            run(conn)
        else:
            for statement in run.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION (each step in one transaction)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
        # A new file: incremental auto-vacuum, so the janitor can hand freed pages back to the
        # file system (leftovers.PAGES). Set before any table exists; the file is already in
        # WAL mode, where only a VACUUM (instant on an empty file) applies the setting.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"store schema version {version} is newer than this store")
    if version == 1:
        _step(conn, 2, _MIGRATE_1_TO_2)
        version = 2
    if version == 2:
        _step(conn, 3, _migrate_2_to_3)
        version = 3
    if version == 3:
        _step(conn, 4, _migrate_3_to_4)
        version = 4
    if version == 4:
        _step(conn, 5, _migrate_4_to_5)
        version = 5
    if version == 5:
        _step(conn, 6, _migrate_5_to_6)
        version = 6
    if version == 6:
        _step(conn, 7, _migrate_6_to_7)
        version = 7
    if version == 7:
        _step(conn, 8, _migrate_7_to_8)
        version = 8
    if version == 8:
        _step(conn, 9, _migrate_8_to_9)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
