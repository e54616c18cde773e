"""Message operations of the SQLite backend, each the body of one transaction."""

from __future__ import annotations

import json
import sqlite3
import time

from postmesh.api.store.v1 import store_pb2
from postmesh.store import flag_listing
from postmesh.store import quota as q
from postmesh.store.blobs import BlobSource
from postmesh.store.errors import InvalidArgument, Unavailable
from postmesh.store.model import (
    AppendResult,
    Changes,
    CopyResult,
    DeliverResult,
    Delivery,
    ExpungeResult,
    FlagListing,
    FlagsMode,
    FlagsResult,
    Message,
    MessageIndex,
    SearchCandidate,
    SearchRows,
)
from postmesh.store.search import plan
from postmesh.store.sqlite import mailboxes as mb
from postmesh.store.sqlite import rows, search_sql
from postmesh.store.validation import DELETED, SEEN, apply_flags


def deliver(
    conn: sqlite3.Connection,
    d: Delivery,
    source: BlobSource | None,
    index: MessageIndex | None,
    quota_defaults: tuple[int, int],
) -> DeliverResult:
    assert d.blob_id is not None
    key = (d.queue_id, d.user, d.mailbox)
    done = conn.execute(
        "SELECT uid, uidvalidity, modseq FROM deliveries"
        " WHERE queue_id = ? AND user = ? AND mailbox = ?",
        key,
    ).fetchone()
    if done is not None:
        return DeliverResult(done[0], done[1], d.mailbox, done[2], duplicate=True, created=False)
    if source is not None:
        size = source.size
    else:
        got = conn.execute("SELECT size FROM blobs WHERE id = ?", (d.blob_id,)).fetchone()
        if got is None:
            raise InvalidArgument(f"unknown blob_id {d.blob_id}")
        size = int(got[0])
    if index is None:
        raise Unavailable(f"blob {d.blob_id} was being stored while parsed; retry")
    # The first delivery to a user provisions them (INBOX and the special-use mailboxes).
    created = [] if rows.user_known(conn, d.user) else mb.provision(conn, d.user).created
    row = rows.require_mailbox(conn, d.user, d.mailbox)
    mailbox_id, uidvalidity = row[0], row[3]
    q.check(rows.quota(conn, d.user, *quota_defaults), size, 1)
    if source is not None:
        rows.store_blob(conn, source, 1, 0)
    else:
        rows.add_refs(conn, d.blob_id, 1)
    rows.put_index(conn, d.blob_id, index)
    uid, modseq = rows.allocate(conn, mailbox_id, 1)
    rows.insert_message(
        conn, mailbox_id, uid, modseq, d.flags, d.internal_date, size, d.blob_id, index
    )
    conn.execute(
        "INSERT INTO deliveries (queue_id, user, mailbox, uid, uidvalidity, modseq, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*key, uid, uidvalidity, modseq, int(time.time())),
    )
    return DeliverResult(
        uid, uidvalidity, d.mailbox, modseq, duplicate=False, created=True,
        created_mailboxes=tuple(created),
    )  # fmt: skip


def check_append(
    conn: sqlite3.Connection, user: str, mailbox: str, size: int, quota_defaults: tuple[int, int]
) -> None:
    rows.require_mailbox(conn, user, mailbox)
    q.check(rows.quota(conn, user, *quota_defaults), size, 1)


def append(
    conn: sqlite3.Connection,
    user: str,
    mailbox: str,
    source: BlobSource,
    flags: tuple[str, ...],
    internal_date: int,
    index: MessageIndex,
    quota_defaults: tuple[int, int],
    claim_recent: bool = False,
) -> AppendResult:
    row = rows.require_mailbox(conn, user, mailbox)
    q.check(rows.quota(conn, user, *quota_defaults), source.size, 1)
    rows.store_blob(conn, source, 1, 0)
    rows.put_index(conn, source.blob_id, index)
    uid, modseq = rows.allocate(conn, row[0], 1)
    rows.insert_message(
        conn, row[0], uid, modseq, flags, internal_date, source.size, source.blob_id, index
    )
    recent_first = 0
    if claim_recent:
        # The appending session is the first told of the message (RFC 3501 section 6.3.11):
        # it claims up to it in this transaction (rows.claim_recent).
        recent_first = int(row[8])
        rows.raise_first_recent(conn, row[0], recent_first, uid)
    return AppendResult(uid, row[3], modseq, mailbox, recent_first=recent_first)


def copy(
    conn: sqlite3.Connection,
    user: str,
    mailbox: str,
    uids: list[int],
    destination: str,
    move: bool,
    quota_defaults: tuple[int, int],
) -> CopyResult:
    src = rows.require_mailbox(conn, user, mailbox)
    dst = rows.require_mailbox(conn, user, destination)
    msgs = rows.select_uids(conn, src[0], uids)
    if not msgs:
        return CopyResult(dst[3])
    if not move:  # a move within one user's mailboxes leaves usage as it is
        q.check(rows.quota(conn, user, *quota_defaults), sum(m.size for m in msgs), len(msgs))
    dest, modseq, source_modseq = rows.copy_rows(conn, src[0], msgs, dst[0], move=move)
    source_uids = [m.uid for m in msgs]
    return CopyResult(dst[3], source_uids, dest, modseq, source_uids if move else [], source_modseq)


def store_flags(
    conn: sqlite3.Connection,
    user: str,
    mailbox: str,
    uids: list[int],
    mode: FlagsMode,
    flags: tuple[str, ...],
    unchanged_since: int,
) -> FlagsResult:
    mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
    result = FlagsResult()
    modseq = 0
    for msg in rows.select_uids(conn, mailbox_id, uids):
        if unchanged_since and msg.modseq > unchanged_since:
            result.modified.append(msg.uid)
            continue
        new = apply_flags(msg.flags, mode, flags)
        if set(new) == set(msg.flags):
            result.messages.append(msg)
            continue
        # RFC 7162 section 3.1: one new MODSEQ for the messages one STORE changed.
        modseq = modseq or rows.bump_modseq(conn, mailbox_id)
        conn.execute(
            "UPDATE messages SET flags = ?, seen = ?, deleted = ?, modseq = ?"
            " WHERE mailbox_id = ? AND uid = ?",
            (json.dumps(new), int(SEEN in new), int(DELETED in new), modseq, mailbox_id, msg.uid),
        )
        result.messages.append(
            Message(msg.uid, new, msg.size, msg.internal_date, modseq, msg.blob_id)
        )
        result.changed.append(msg.uid)
    return result


def expunge(
    conn: sqlite3.Connection, user: str, mailbox: str, uids: list[int] | None
) -> ExpungeResult:
    mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
    if uids is None:
        found = conn.execute(
            f"SELECT {rows.MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND deleted = 1"
            " ORDER BY uid",
            (mailbox_id,),
        ).fetchall()
        doomed = [rows.message(r) for r in found]
    else:
        doomed = [m for m in rows.select_uids(conn, mailbox_id, uids) if DELETED in m.flags]
    if not doomed:
        return ExpungeResult()
    modseq = rows.bump_modseq(conn, mailbox_id)
    rows.remove_messages(conn, mailbox_id, doomed, modseq)
    return ExpungeResult([m.uid for m in doomed], modseq)


def list_messages(
    conn: sqlite3.Connection, user: str, mailbox: str, after_uid: int, limit: int
) -> tuple[list[Message], bool]:
    mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
    found = conn.execute(
        f"SELECT {rows.MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND uid > ?"
        " ORDER BY uid LIMIT ?",
        (mailbox_id, after_uid, limit + 1),
    ).fetchall()
    return [rows.message(r) for r in found[:limit]], len(found) > limit


def _flags_of(stored: str) -> tuple[str, ...]:
    return tuple(json.loads(stored))


def list_flags(
    conn: sqlite3.Connection,
    user: str,
    mailbox: str,
    after_uid: int,
    limit: int,
    cache: flag_listing.ListingCache | None = None,
) -> FlagListing:
    row = rows.require_mailbox(conn, user, mailbox)
    mailbox_id = row[0]
    # The mailbox's state: every change to its messages takes a MODSEQ (flags, new messages,
    # expunges, moves out) or changes its count (ADR 0051).
    key = (mailbox_id, row[3], row[4], row[5], rows.counts(conn, mailbox_id)[0], after_uid, limit)
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    # The flags' JSON text is canonical (``validation.apply_flags`` order), so equal texts are
    # equal sets: each distinct one is decoded once.
    cur = conn.execute(
        "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ? AND uid > ?"
        " ORDER BY uid LIMIT ?",
        (mailbox_id, after_uid, limit + 1),
    )
    page = flag_listing.fold(cur.fetchall(), limit, _flags_of)
    if cache is not None:
        cache.put(key, page)
    return page


def get_meta(
    conn: sqlite3.Connection, user: str, mailbox: str, uids: list[int]
) -> list[tuple[int, str, bytes | None]]:
    mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
    out: list[tuple[int, str, bytes | None]] = []
    for i in range(0, len(uids), rows.BATCH):
        part = uids[i : i + rows.BATCH]
        marks = ",".join("?" * len(part))
        found = conn.execute(
            # The planner prefers blob_index's primary key, whose rows are large (schema.py).
            "SELECT m.uid, m.blob_id, i.meta FROM messages m"
            " LEFT JOIN blob_index i INDEXED BY blob_index_meta ON i.blob_id = m.blob_id"
            f" WHERE m.mailbox_id = ? AND m.uid IN ({marks}) ORDER BY m.uid",
            (mailbox_id, *part),
        ).fetchall()
        out.extend((int(u), b, None if meta is None else bytes(meta)) for u, b, meta in found)
    return out


def search(
    conn: sqlite3.Connection, user: str, mailbox: str, criteria: store_pb2.SearchKey
) -> SearchRows:
    """The search in one query: what ``search.plan`` pushes down is the WHERE clause, so only
    matching rows leave SQLite; columns and search documents are loaded only for rows the
    evaluator still has to look at."""
    mailbox_id = rows.require_mailbox(conn, user, mailbox)[0]
    max_uid = int(
        conn.execute(
            "SELECT COALESCE(MAX(uid), 0) FROM messages WHERE mailbox_id = ?", (mailbox_id,)
        ).fetchone()[0]
    )
    p = plan(criteria, max_uid, search_sql.LIMITS)
    params: search_sql.Params = [mailbox_id]
    where = search_sql.to_sql(p.pushed, params)
    if p.residual is None and not p.uses_headers:
        found = conn.execute(
            f"SELECT m.uid, m.modseq FROM messages m WHERE m.mailbox_id = ? AND {where}"
            " ORDER BY m.uid",
            params,
        ).fetchall()
        return SearchRows([(int(u), int(ms)) for u, ms in found], None, [], [], max_uid)
    # A message whose content was stored before indexing has no header rows: it comes back
    # whatever the header conditions say, for the evaluator. Only a file upgraded with such
    # messages has them (ADR 0065); elsewhere the look-up per message is left out.
    unindexed = search_sql.UNINDEXED if p.uses_headers and rows.may_have_unindexed(conn) else "0"
    if unindexed != "0":
        where = f"({where} OR {unindexed})"
    cols = ", ".join(f"m.{c}" for c in rows.MESSAGE_COLS.split(", "))
    sql = f"SELECT {cols}, m.sent_day, {unindexed}"
    if p.residual_needs_document:
        sql += ", i.search FROM messages m LEFT JOIN blob_index i ON i.blob_id = m.blob_id"
    else:
        sql += ", NULL FROM messages m"
    found = conn.execute(
        f"{sql} WHERE m.mailbox_id = ? AND {where} ORDER BY m.uid", params
    ).fetchall()
    out = SearchRows([], p.residual, [], [], max_uid)
    for r in found:
        if not r[7] and p.residual is None:
            out.hits.append((int(r[0]), int(r[4])))
            continue
        cand = SearchCandidate(rows.message(r), r[6], None if r[8] is None else bytes(r[8]))
        (out.unindexed if r[7] else out.candidates).append(cand)
    return out


def get_changes(conn: sqlite3.Connection, user: str, mailbox: str, since: int) -> Changes:
    row = rows.require_mailbox(conn, user, mailbox)
    # "+uid": without it the planner walks the whole mailbox in UID order to find the few rows
    # above ``since``; with it, it takes the (mailbox_id, modseq) indexes and sorts what they
    # find (a resync of an unchanged 2,000-message mailbox: ~86 µs -> ~5 µs; ADR 0039).
    changed = conn.execute(
        f"SELECT {rows.MESSAGE_COLS} FROM messages WHERE mailbox_id = ? AND modseq > ?"
        " ORDER BY +uid",
        (row[0], since),
    ).fetchall()
    gone = conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY +uid",
        (row[0], since),
    ).fetchall()
    floor = conn.execute("SELECT vanished_floor FROM mailboxes WHERE id = ?", (row[0],)).fetchone()
    return Changes(
        [rows.message(r) for r in changed], [int(g[0]) for g in gone], row[5], row[3],
        expunged_incomplete=since < int(floor[0]), first_recent_uid=row[8],
    )  # fmt: skip
