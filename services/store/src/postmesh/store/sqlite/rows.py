"""Row-level helpers of the SQLite backend. Synchronous: each runs inside the caller's
transaction on the writer thread (see ``repository.py``)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from typing import Any

from postmesh.store import quota as q
from postmesh.store.blobs import BlobSource
from postmesh.store.errors import FailedPrecondition, NotFound, UnknownUser
from postmesh.store.hierarchy import child_range
from postmesh.store.indexing import search_headers
from postmesh.store.model import Mailbox, Message, MessageIndex, Quota, RecentClaim
from postmesh.store.sqlite.schema import insert_headers
from postmesh.store.sqlite.search_sql import UNINDEXED_FACT
from postmesh.store.validation import DELETED, SEEN

Row = tuple[Any, ...]
MAILBOX_COLS = (
    "id, user, name, uidvalidity, uidnext, highestmodseq, special_use, noselect, first_recent_uid"
)
MESSAGE_COLS = "uid, flags, size, internal_date, modseq, blob_id"
# Bound parameters per statement, well below SQLite's limit.
BATCH = 500


def message(row: Row) -> Message:
    uid, flags, size, internal_date, modseq, blob_id = row[:6]
    return Message(int(uid), tuple(json.loads(flags)), size, internal_date, modseq, blob_id)


# -- users -------------------------------------------------------------------------------------


def user_known(conn: sqlite3.Connection, user: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE user = ?", (user,)).fetchone() is not None


def require_user(conn: sqlite3.Connection, user: str) -> None:
    if not user_known(conn, user):
        raise UnknownUser(user)


def insert_user(conn: sqlite3.Connection, user: str) -> None:
    # The counter starts at the clock so values stay above any a time-based scheme gave out.
    conn.execute(
        "INSERT INTO users (user, next_uidvalidity, created_at) VALUES (?, ?, ?)",
        (user, max(1, int(time.time())), int(time.time())),
    )


def next_uidvalidity(conn: sqlite3.Connection, user: str) -> int:
    row = conn.execute(
        "UPDATE users SET next_uidvalidity = next_uidvalidity + 1 WHERE user = ?"
        " RETURNING next_uidvalidity - 1",
        (user,),
    ).fetchone()
    if row is None:
        raise UnknownUser(user)
    return int(row[0]) & 0xFFFFFFFF or 1


def quota(conn: sqlite3.Connection, user: str, default_bytes: int, default_messages: int) -> Quota:
    limits = conn.execute(
        "SELECT storage_limit, message_limit FROM users WHERE user = ?", (user,)
    ).fetchone()
    if limits is None:
        raise UnknownUser(user)
    # The mailboxes' counters (schema.py, ADR 0046): a few rows, not every message.
    count, size = conn.execute(
        "SELECT COALESCE(SUM(n_messages), 0), COALESCE(SUM(n_bytes), 0) FROM mailboxes"
        " WHERE user = ?",
        (user,),
    ).fetchone()
    return Quota(
        int(size), q.effective(limits[0], default_bytes),
        int(count), q.effective(limits[1], default_messages),
    )  # fmt: skip


# -- mailboxes ---------------------------------------------------------------------------------


def mailbox_row(conn: sqlite3.Connection, user: str, name: str) -> Row | None:
    row: Row | None = conn.execute(
        f"SELECT {MAILBOX_COLS} FROM mailboxes WHERE user = ? AND name = ?", (user, name)
    ).fetchone()
    return row


def require_mailbox(
    conn: sqlite3.Connection, user: str, name: str, *, selectable: bool = True
) -> Row:
    row = mailbox_row(conn, user, name)
    if row is None:
        require_user(conn, user)
        raise NotFound(f"mailbox {name!r} of {user} does not exist")
    if selectable and row[7]:
        raise FailedPrecondition(f"mailbox {name!r} is not selectable (\\Noselect)")
    return row


def insert_mailbox(conn: sqlite3.Connection, user: str, name: str, special_use: str = "") -> int:
    row = conn.execute(
        "INSERT INTO mailboxes (user, name, uidvalidity, uidnext, highestmodseq, special_use,"
        " created_at) VALUES (?, ?, ?, 1, 1, ?, ?) RETURNING id",
        (user, name, next_uidvalidity(conn, user), special_use, int(time.time())),
    ).fetchone()
    return int(row[0])


def has_children(conn: sqlite3.Connection, user: str, name: str) -> bool:
    low, high = child_range(name)
    row = conn.execute(
        "SELECT 1 FROM mailboxes WHERE user = ? AND name >= ? AND name < ? LIMIT 1",
        (user, low, high),
    ).fetchone()
    return row is not None


def subscribed(conn: sqlite3.Connection, user: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM subscriptions WHERE user = ? AND name = ?", (user, name)
    ).fetchone()
    return row is not None


def counts(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int, int, int]:
    """(messages, seen, deleted, size): kept by SQLite's triggers in the transaction of every
    change (schema.py, ADR 0046), so they cannot drift."""
    row = conn.execute(
        "SELECT n_messages, n_seen, n_deleted, n_bytes FROM mailboxes WHERE id = ?",
        (mailbox_id,),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def to_mailbox(
    row: Row,
    counted: tuple[int, int, int, int],
    *,
    subscribed: bool,
    children: bool,
    recent: int = 0,
) -> Mailbox:
    mid, user, name, uidvalidity, uidnext, modseq, special_use, noselect, first_recent = row
    total, seen, deleted, size = counted
    return Mailbox(
        str(mid), user, name, uidvalidity, uidnext, modseq, total, total - seen,
        special_use, subscribed, deleted, size, bool(noselect), children, first_recent, recent,
    )  # fmt: skip


def load_mailbox(conn: sqlite3.Connection, row: Row) -> Mailbox:
    user, name = row[1], row[2]
    return to_mailbox(
        row, counts(conn, row[0]),
        subscribed=subscribed(conn, user, name), children=has_children(conn, user, name),
        recent=count_recent(conn, row),
    )  # fmt: skip


def count_recent(conn: sqlite3.Connection, row: Row) -> int:
    """Live messages no session has claimed (STATUS RECENT): none to count once a session
    claimed up to UIDNEXT, the usual case, so no query then."""
    mid, uidnext, first_recent = row[0], row[4], row[8]
    if first_recent >= uidnext:
        return 0
    found = conn.execute(
        "SELECT COUNT(*) FROM messages WHERE mailbox_id = ? AND uid >= ?", (mid, first_recent)
    ).fetchone()
    return int(found[0])


def claim_recent(conn: sqlite3.Connection, row: Row, up_to_uid: int) -> RecentClaim:
    """RFC 3501 section 2.3.2: the caller is the first session told of the messages from
    ``first_recent_uid`` up to ``up_to_uid`` (0, or above the highest UID: up to the highest);
    nothing of a \\Noselect mailbox (a SELECT of it fails on its own).
    In the caller's write transaction: no other claim sees the old value."""
    mid, uidvalidity, uidnext, first = row[0], row[3], row[4], row[8]
    last = uidnext - 1 if up_to_uid == 0 else min(up_to_uid, uidnext - 1)
    if row[7]:
        last = first - 1  # \\Noselect: no messages, nothing to claim
    raise_first_recent(conn, mid, first, last)
    return RecentClaim(first, last, uidvalidity)


def raise_first_recent(conn: sqlite3.Connection, mailbox_id: int, first: int, last: int) -> None:
    """Record the claim of the UIDs ``first`` to ``last`` (none when ``last < first``)."""
    if last >= first:
        conn.execute(
            "UPDATE mailboxes SET first_recent_uid = ? WHERE id = ?", (last + 1, mailbox_id)
        )


def bump_modseq(conn: sqlite3.Connection, mailbox_id: int) -> int:
    row = conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchone()
    return int(row[0])


def advance_modseqs(conn: sqlite3.Connection, by: int) -> None:
    """Move every mailbox's MODSEQ counter up by ``by``. The counter is then above every
    message's MODSEQ, as after any EXPUNGE (whose MODSEQ no message keeps, RFC 7162 section
    3.2.10): a client that resynchronises since an older HIGHESTMODSEQ finds nothing new."""
    conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + ?", (by,))


def allocate(conn: sqlite3.Connection, mailbox_id: int, uids: int) -> tuple[int, int]:
    """Take ``uids`` UIDs and one MODSEQ: (first uid, modseq)."""
    row = conn.execute(
        "UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1"
        " WHERE id = ? RETURNING uidnext - ?, highestmodseq",
        (uids, mailbox_id, uids),
    ).fetchone()
    return int(row[0]), int(row[1])


# -- blobs -------------------------------------------------------------------------------------


def store_blob(conn: sqlite3.Connection, source: BlobSource, refs: int, pin: int) -> None:
    """Insert the blob with its chunks if new, else add ``refs`` and extend the pin."""
    cur = conn.execute(
        "UPDATE blobs SET refcount = refcount + ?, pinned_until = MAX(pinned_until, ?)"
        " WHERE id = ?",
        (refs, pin, source.blob_id),
    )
    if cur.rowcount:
        return
    conn.execute(
        "INSERT INTO blobs (id, size, refcount, pinned_until, created_at) VALUES (?, ?, ?, ?, ?)",
        (source.blob_id, source.size, refs, pin, int(time.time())),
    )
    conn.executemany(
        "INSERT INTO blob_chunks (blob_id, n, data) VALUES (?, ?, ?)",
        ((source.blob_id, n, source.read_chunk(n)) for n in range(source.chunks)),
    )


def add_refs(conn: sqlite3.Connection, blob_id: str, refs: int) -> int | None:
    """Add references to a stored blob; its size, or None when it is not stored."""
    row = conn.execute(
        "UPDATE blobs SET refcount = refcount + ? WHERE id = ? RETURNING size", (refs, blob_id)
    ).fetchone()
    return None if row is None else int(row[0])


def release_blob(conn: sqlite3.Connection, blob_id: str, refs: int) -> None:
    row = conn.execute(
        "UPDATE blobs SET refcount = refcount - ? WHERE id = ? RETURNING refcount, pinned_until",
        (refs, blob_id),
    ).fetchone()
    if row is not None and row[0] <= 0 and row[1] <= time.time():
        delete_blob(conn, blob_id)


def delete_blob(conn: sqlite3.Connection, blob_id: str) -> None:
    conn.execute("DELETE FROM blob_headers WHERE blob_id = ?", (blob_id,))
    conn.execute("DELETE FROM blob_index WHERE blob_id = ?", (blob_id,))
    conn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (blob_id,))
    conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))


def may_have_unindexed(conn: sqlite3.Connection) -> bool:
    """Does the file record that some message's content may lack header rows (ADR 65)?"""
    row = conn.execute("SELECT 1 FROM store_facts WHERE name = ?", (UNINDEXED_FACT,)).fetchone()
    return row is not None


def put_index(conn: sqlite3.Connection, blob_id: str, index: MessageIndex) -> None:
    cur = conn.execute(
        "INSERT OR IGNORE INTO blob_index (blob_id, meta, search, sent_day, wire_ready)"
        " VALUES (?, ?, ?, ?, ?)",
        (blob_id, index.meta, index.search, index.sent_day, index.wire_ready),
    )
    if cur.rowcount:
        insert_headers(conn, blob_id, search_headers(index))


# -- messages ----------------------------------------------------------------------------------


def insert_message(
    conn: sqlite3.Connection,
    mailbox_id: int,
    uid: int,
    modseq: int,
    flags: tuple[str, ...],
    internal_date: int,
    size: int,
    blob_id: str,
    index: MessageIndex,
) -> Message:
    """The message row, with the fields of ``index`` kept on each message (sent_day,
    wire_ready)."""
    conn.execute(
        "INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date,"
        " size, blob_id, sent_day, wire_ready) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mailbox_id, uid, modseq, json.dumps(flags), int(SEEN in flags),
            int(DELETED in flags), internal_date, size, blob_id, index.sent_day,
            index.wire_ready,
        ),
    )  # fmt: skip
    return Message(uid, flags, size, internal_date, modseq, blob_id)


def select_uids(conn: sqlite3.Connection, mailbox_id: int, uids: list[int]) -> list[Message]:
    out: list[Message] = []
    for i in range(0, len(uids), BATCH):
        part = uids[i : i + BATCH]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND uid IN ({marks})"
            " ORDER BY uid",
            (mailbox_id, *part),
        ).fetchall()
        out.extend(message(r) for r in rows)
    return out


def remove_messages(
    conn: sqlite3.Connection, mailbox_id: int, msgs: list[Message], modseq: int | None
) -> None:
    """Delete messages and drop their blob references; with ``modseq``, leave expunge
    tombstones (a mailbox being deleted needs none)."""
    for m in msgs:
        conn.execute("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, m.uid))
    if modseq is not None:
        now = int(time.time())
        conn.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq, expunged_at)"
            " VALUES (?, ?, ?, ?)",
            ((mailbox_id, m.uid, modseq, now) for m in msgs),
        )
    for blob_id, refs in Counter(m.blob_id for m in msgs).items():
        release_blob(conn, blob_id, refs)


def copy_rows(
    conn: sqlite3.Connection, src_id: int, msgs: list[Message], dst_id: int, *, move: bool
) -> tuple[list[int], int, int]:
    """Copy ``msgs`` (ascending UID) into the destination with new UIDs, one MODSEQ and a new
    blob reference each; ``move`` then removes the sources (one expunge MODSEQ) and their
    references. Returns (destination uids, destination modseq, source modseq)."""
    first, modseq = allocate(conn, dst_id, len(msgs))
    dest = []
    for i, m in enumerate(msgs):
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date,"
            " size, blob_id, sent_day, wire_ready) SELECT ?, ?, ?, flags, seen, deleted,"
            " internal_date, size, blob_id, sent_day, wire_ready FROM messages"
            " WHERE mailbox_id = ? AND uid = ?",
            (dst_id, first + i, modseq, src_id, m.uid),
        )
        dest.append(first + i)
    for blob_id, refs in Counter(m.blob_id for m in msgs).items():
        add_refs(conn, blob_id, refs)
    source_modseq = 0
    if move:
        source_modseq = bump_modseq(conn, src_id)
        remove_messages(conn, src_id, msgs, source_modseq)
    return dest, modseq, source_modseq
