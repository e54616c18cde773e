"""Mailbox operations of the SQLite backend, each the body of one transaction."""

from __future__ import annotations

import sqlite3

from postmesh.store.errors import AlreadyExists, FailedPrecondition
from postmesh.store.hierarchy import DEFAULT_MAILBOXES, child_range, parents, renamed
from postmesh.store.model import (
    INBOX,
    CopyResult,
    CreateResult,
    DeleteResult,
    Mailbox,
    ProvisionResult,
    RenameResult,
)
from postmesh.store.sqlite import rows


def provision(conn: sqlite3.Connection, user: str, listing: bool = True) -> ProvisionResult:
    if rows.user_known(conn, user):
        return ProvisionResult(list_mailboxes(conn, user) if listing else [])
    rows.insert_user(conn, user)
    created = []
    for name, special_use in DEFAULT_MAILBOXES:
        if rows.mailbox_row(conn, user, name) is None:
            rows.insert_mailbox(conn, user, name, special_use)
            created.append(name)
        set_subscription(conn, user, name, True)
    return ProvisionResult(list_mailboxes(conn, user) if listing else [], created)


def create_missing_parents(conn: sqlite3.Connection, user: str, name: str) -> list[str]:
    created = []
    for parent in parents(name):
        if rows.mailbox_row(conn, user, parent) is None:
            rows.insert_mailbox(conn, user, parent)
            created.append(parent)
    return created


def create(conn: sqlite3.Connection, user: str, name: str, special_use: str) -> CreateResult:
    rows.require_user(conn, user)
    existing = rows.mailbox_row(conn, user, name)
    if existing is not None and not existing[7]:
        raise AlreadyExists(f"mailbox {name!r} exists")
    created = create_missing_parents(conn, user, name)
    if existing is not None:
        # A \Noselect parent becomes a mailbox again, under a new UIDVALIDITY.
        conn.execute(
            "UPDATE mailboxes SET noselect = 0, uidvalidity = ?, special_use = ? WHERE id = ?",
            (rows.next_uidvalidity(conn, user), special_use, existing[0]),
        )
    else:
        rows.insert_mailbox(conn, user, name, special_use)
    box = rows.load_mailbox(conn, rows.require_mailbox(conn, user, name))
    return CreateResult(box, [*created, name])


def prune_noselect_parents(conn: sqlite3.Connection, user: str, name: str) -> list[str]:
    """Drop \\Noselect superiors of ``name`` that no longer have any inferior."""
    removed = []
    for parent in reversed(parents(name)):
        row = rows.mailbox_row(conn, user, parent)
        if row is None or not row[7] or rows.has_children(conn, user, parent):
            break
        conn.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
        removed.append(parent)
    return removed


def delete(conn: sqlite3.Connection, user: str, name: str) -> DeleteResult:
    row = rows.require_mailbox(conn, user, name, selectable=False)
    children = rows.has_children(conn, user, name)
    if row[7] and children:
        # RFC 9051 section 6.3.5: deleting a \Noselect name with inferiors is an error.
        raise FailedPrecondition(f"mailbox {name!r} is \\Noselect and has inferiors")
    found = conn.execute(
        f"SELECT {rows.MESSAGE_COLS} FROM messages WHERE mailbox_id = ?", (row[0],)
    ).fetchall()
    msgs = [rows.message(r) for r in found]
    rows.remove_messages(conn, row[0], msgs, None)
    conn.execute("DELETE FROM expunged WHERE mailbox_id = ?", (row[0],))
    if children:
        conn.execute("UPDATE mailboxes SET noselect = 1, special_use = '' WHERE id = ?", (row[0],))
        return DeleteResult(len(msgs), [], kept_as_noselect=True)
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
    return DeleteResult(len(msgs), [name, *prune_noselect_parents(conn, user, name)])


def rename(conn: sqlite3.Connection, user: str, old: str, new: str) -> RenameResult:
    rows.require_user(conn, user)
    src = rows.require_mailbox(conn, user, old, selectable=old == INBOX)
    if old == INBOX:
        # RFC 9051 section 6.3.6: INBOX's messages move to a new mailbox; INBOX stays, empty,
        # and its inferiors stay where they are.
        if rows.mailbox_row(conn, user, new) is not None:
            raise AlreadyExists(f"mailbox {new!r} exists")
        created = create_missing_parents(conn, user, new)
        dst_id = rows.insert_mailbox(conn, user, new)
        found = conn.execute(
            f"SELECT {rows.MESSAGE_COLS} FROM messages WHERE mailbox_id = ? ORDER BY uid",
            (src[0],),
        ).fetchall()
        msgs = [rows.message(r) for r in found]
        moved = None
        if msgs:
            dest, modseq, source_modseq = rows.copy_rows(conn, src[0], msgs, dst_id, move=True)
            uids = [m.uid for m in msgs]
            dst = rows.require_mailbox(conn, user, new)
            moved = CopyResult(dst[3], uids, dest, modseq, uids, source_modseq)
        box = rows.load_mailbox(conn, rows.require_mailbox(conn, user, new))
        return RenameResult(box, [(INBOX, new)], created, moved)
    low, high = child_range(old)
    tree = [(src[0], old)] + [
        (int(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT id, name FROM mailboxes WHERE user = ? AND name >= ? AND name < ?"
            " ORDER BY name",
            (user, low, high),
        ).fetchall()
    ]
    pairs = [(mid, name, renamed(name, old, new)) for mid, name in tree]
    for _, _, target in pairs:
        if rows.mailbox_row(conn, user, target) is not None:
            raise AlreadyExists(f"mailbox {target!r} exists")
    created = create_missing_parents(conn, user, new)
    for mid, _, target in pairs:
        conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (target, mid))
    # Subscriptions follow the rename (as Dovecot does); others under the old name stay.
    for _, name, target in pairs:
        if rows.subscribed(conn, user, name):
            conn.execute("DELETE FROM subscriptions WHERE user = ? AND name = ?", (user, name))
            set_subscription(conn, user, target, True)
    prune_noselect_parents(conn, user, old)
    box = rows.load_mailbox(conn, rows.require_mailbox(conn, user, new, selectable=False))
    return RenameResult(box, [(name, target) for _, name, target in pairs], created)


def set_subscription(conn: sqlite3.Connection, user: str, name: str, on: bool) -> None:
    rows.require_user(conn, user)
    if on:
        conn.execute("INSERT OR IGNORE INTO subscriptions (user, name) VALUES (?, ?)", (user, name))
    else:
        conn.execute("DELETE FROM subscriptions WHERE user = ? AND name = ?", (user, name))


def list_subscriptions(conn: sqlite3.Connection, user: str) -> list[str]:
    rows.require_user(conn, user)
    found = conn.execute(
        "SELECT name FROM subscriptions WHERE user = ? ORDER BY name", (user,)
    ).fetchall()
    return [str(r[0]) for r in found]


def list_mailboxes(conn: sqlite3.Connection, user: str) -> list[Mailbox]:
    rows.require_user(conn, user)
    found = conn.execute(
        f"SELECT {rows.MAILBOX_COLS} FROM mailboxes WHERE user = ? ORDER BY name", (user,)
    ).fetchall()
    counted = {
        int(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT m.mailbox_id, COUNT(*), SUM(m.seen), SUM(m.deleted), SUM(m.size)"
            " FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user = ?"
            " GROUP BY m.mailbox_id",
            (user,),
        ).fetchall()
    }
    recent = {int(r[0]): rows.count_recent(conn, r) for r in found if r[8] < r[4]}
    subs = set(list_subscriptions(conn, user))
    superiors = {p for r in found for p in parents(r[2])}
    return [
        rows.to_mailbox(
            r,
            counted.get(int(r[0]), (0, 0, 0, 0)),
            subscribed=r[2] in subs,
            children=r[2] in superiors,
            recent=recent.get(int(r[0]), 0),
        )
        for r in found
    ]


def get(conn: sqlite3.Connection, user: str, name: str) -> Mailbox:
    return rows.load_mailbox(conn, rows.require_mailbox(conn, user, name, selectable=False))
