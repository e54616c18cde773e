"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE over the wire (RFC 9051 §6.3.4-8, RFC 6154
§3 CREATE-SPECIAL-USE), every bad input, and a selected mailbox deleted or renamed by another
session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from imap_wire import USER, Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def _names(c: Client) -> list[bytes]:
    return (await c.cmd(b'l LIST "" *'))[:-1]


# -- CREATE (RFC 9051 §6.3.4) ----------------------------------------------------------------------


async def test_create_with_hierarchy_and_trailing_delimiter(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"c1 CREATE Projects/2026/Q1") == [b"c1 OK CREATE completed"]
    # "the server SHOULD create the name without the separator"
    assert await c.cmd(b'c2 CREATE "Lists/"') == [b"c2 OK CREATE completed"]
    assert await c.cmd(b'l LIST "" Projects*') == [
        b'* LIST (\\HasChildren) "/" "Projects"',
        b'* LIST (\\HasChildren) "/" "Projects/2026"',
        b'* LIST (\\HasNoChildren) "/" "Projects/2026/Q1"',
        b"l OK LIST completed",
    ]
    assert await c.cmd(b"l LIST Lists *") == [
        b'* LIST (\\HasNoChildren) "/" "Lists"',
        b"l OK LIST completed",
    ]
    # A new mailbox can be selected and starts empty with its own UIDVALIDITY.
    reply = await c.cmd(b"s SELECT Projects/2026/Q1")
    assert b"* 0 EXISTS" in reply and reply[-1] == b"s OK [READ-WRITE] SELECT completed"
    c.writer.close()


async def test_create_existing_inbox_and_bad_names(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"c1 CREATE Sent") == [b"c1 NO [ALREADYEXISTS] Mailbox already exists: Sent"]
    assert await c.cmd(b"c2 CREATE inbox") == [
        b"c2 NO [ALREADYEXISTS] Mailbox already exists: INBOX"
    ]
    assert await c.cmd(b'c3 CREATE ""') == [b"c3 NO [CANNOT] Empty mailbox name"]
    # Wildcards and empty levels cannot be named (the store says why).
    star = await c.cmd(b'c4 CREATE "a*b"')
    assert star[-1].startswith(b"c4 NO [CANNOT] Cannot create mailbox: invalid mailbox name")
    empty_level = await c.cmd(b'c5 CREATE "a//b"')
    assert (
        empty_level[-1].startswith(b"c5 NO [CANNOT]")
        and b"empty hierarchy level" in (empty_level[-1])
    )
    too_long = await c.cmd(b'c11 CREATE "' + b"x" * 300 + b'"')
    assert too_long == [
        b"c11 NO [CANNOT] Cannot create mailbox: mailbox name longer than 255 octets"
    ]
    dots = await c.cmd(b"c12 CREATE a/../b")
    assert dots[-1].startswith(b"c12 NO [CANNOT]") and b"'.' or '..' level" in dots[-1]
    # Not modified UTF-7 (an IMAP4rev1 session): BAD with the reason.
    assert (await c.cmd(b"c6 CREATE &Jjo"))[-1].startswith(b"c6 BAD Invalid mailbox name:")
    # Syntax: no argument, two arguments, an unknown parameter list.
    assert (await c.cmd(b"c7 CREATE"))[-1].startswith(b"c7 BAD ")
    assert (await c.cmd(b"c8 CREATE a b"))[-1].startswith(b"c8 BAD ")
    assert await c.cmd(b"c9 CREATE a (FOO (x))") == [b"c9 BAD Unknown CREATE parameter FOO"]
    assert (await c.cmd(b"c10 CREATE a (USE (Sent))"))[-1].startswith(b"c10 BAD ")
    # The session goes on.
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_create_special_use(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"c1 CREATE Spam (USE (\\Junk))") == [b"c1 OK CREATE completed"]
    assert await c.cmd(b'l LIST "" Spam RETURN (SPECIAL-USE)') == [
        b'* LIST (\\HasNoChildren \\Junk) "/" "Spam"',
        b"l OK LIST completed",
    ]
    # RFC 6154 §3: an attribute the server cannot give is NO [USEATTR].
    assert await c.cmd(b"c2 CREATE Everything (USE (\\All))") == [
        b"c2 NO [USEATTR] Special-use attribute \\All is not supported"
    ]
    assert await c.cmd(b"c3 CREATE Two (USE (\\Sent \\Trash))") == [
        b"c3 NO [USEATTR] A mailbox can have one special-use attribute"
    ]
    assert await c.cmd(b"c4 CREATE Plain (USE ())") == [b"c4 OK CREATE completed"]
    assert (USER, "Spam", "\\Junk") in env.mail.made("create_mailbox")
    c.writer.close()


async def test_mailbox_commands_in_the_selected_state(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"c CREATE Later") == [b"c OK CREATE completed"]
    await env.deliver("while creating")
    # Updates of the selected mailbox go out with any command's response.
    assert await c.cmd(b"r RENAME Later Sooner") == [
        b"* 4 EXISTS",
        b"* 1 RECENT",
        b"r OK RENAME completed",
    ]
    assert await c.cmd(b"d DELETE Sooner") == [b"d OK DELETE completed"]
    assert await c.cmd(b"f FETCH 4 (UID)") == [b"* 4 FETCH (UID 4)", b"f OK FETCH completed"]
    c.writer.close()


async def test_create_before_login_is_refused(env: Env) -> None:
    c = await Client.connect(env)
    assert await c.cmd(b"c CREATE x") == [b"c BAD Log in first"]
    assert "x" not in await env.mailbox_names()
    c.writer.close()


# -- DELETE (RFC 9051 §6.3.5) ----------------------------------------------------------------------


async def test_delete_leaf_parent_and_noselect(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"c CREATE Work/Reports")
    await env.deliver("report", mailbox="Work")
    # A mailbox with inferiors loses its messages and stays as \Noselect.
    assert await c.cmd(b"d1 DELETE Work") == [b"d1 OK DELETE completed"]
    assert (await env.store.app.repo.get_mailbox(USER, "Work")).messages == 0
    assert await c.cmd(b'l LIST "" Work*') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Work"',
        b'* LIST (\\HasNoChildren) "/" "Work/Reports"',
        b"l OK LIST completed",
    ]
    # It cannot be selected or examined any more.
    assert await c.cmd(b"s1 SELECT Work") == [
        b"s1 NO [NONEXISTENT] Mailbox is not selectable: Work"
    ]
    assert await c.cmd(b"s2 EXAMINE Work") == [
        b"s2 NO [NONEXISTENT] Mailbox is not selectable: Work"
    ]
    # Deleting it again: \Noselect with inferiors is an error.
    assert await c.cmd(b"d2 DELETE Work") == [
        b"d2 NO [HASCHILDREN] Mailbox has inferior mailboxes: Work"
    ]
    assert await c.cmd(b"d3 DELETE Work/Reports") == [b"d3 OK DELETE completed"]
    assert await c.cmd(b"d4 DELETE Work/Reports") == [
        b"d4 NO [NONEXISTENT] Mailbox does not exist: Work/Reports"
    ]
    c.writer.close()


async def test_delete_inbox_and_bad_input(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"d1 DELETE inbox") == [b"d1 NO [CANNOT] INBOX cannot be deleted"]
    assert await c.cmd(b"d2 DELETE Nope") == [b"d2 NO [NONEXISTENT] Mailbox does not exist: Nope"]
    assert (await c.cmd(b"d3 DELETE"))[-1].startswith(b"d3 BAD ")
    assert (await c.cmd(b"d4 DELETE a b"))[-1].startswith(b"d4 BAD ")
    assert (await c.cmd(b"d5 DELETE &-x&"))[-1].startswith(b"d5 BAD Invalid mailbox name")
    assert await c.cmd(b'd6 DELETE ""') == [b"d6 NO [CANNOT] Empty mailbox name"]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_delete_the_selected_mailbox_closes_it(env: Env) -> None:
    await (await Client.login(env)).cmd(b"c CREATE Old")
    await env.deliver("old one", mailbox="Old")
    c = await Client.selected(env, mailbox="Old")
    assert await c.cmd(b"d DELETE Old") == [
        b"* OK [CLOSED] Selected mailbox deleted",
        b"d OK DELETE completed",
    ]
    # Back in the authenticated state.
    assert await c.cmd(b"f FETCH 1 FLAGS") == [b"f BAD No mailbox selected"]
    c.writer.close()


async def test_selected_mailbox_deleted_by_another_session_gets_bye(env: Env) -> None:
    """Dovecot's behaviour: the selected session is told BYE at its next command, since its
    sequence numbers no longer mean anything (RFC 9051 §7.1.5 lets a server end it)."""
    other = await Client.login(env)
    await other.cmd(b"c CREATE Shared")
    await env.deliver("shared", mailbox="Shared")
    c = await Client.selected(env, mailbox="Shared")
    assert await other.cmd(b"d DELETE Shared") == [b"d OK DELETE completed"]
    await c.send(b"n NOOP")
    assert (await c.line()).startswith(b"* BYE [NONEXISTENT] ")
    assert await c.line() == b"n OK NOOP completed"  # as after LOGOUT's BYE (RFC 9051 §7.1.5)
    assert await c.reader.read() == b""  # closed
    other.writer.close()


# -- RENAME (RFC 9051 §6.3.6) ----------------------------------------------------------------------


async def test_rename_moves_the_hierarchy(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"c CREATE Clients/Acme/2025")
    await env.deliver("acme", mailbox="Clients/Acme")
    assert await c.cmd(b"r RENAME Clients Customers") == [b"r OK RENAME completed"]
    assert await c.cmd(b'l LIST "" C*') == [
        b'* LIST (\\HasChildren) "/" "Customers"',
        b'* LIST (\\HasChildren) "/" "Customers/Acme"',
        b'* LIST (\\HasNoChildren) "/" "Customers/Acme/2025"',
        b"l OK LIST completed",
    ]
    # Messages and UIDs come along.
    assert await c.cmd(b"s STATUS Customers/Acme (MESSAGES UIDNEXT)") == [
        b'* STATUS "Customers/Acme" (MESSAGES 1 UIDNEXT 2)',
        b"s OK STATUS completed",
    ]
    # Into a new hierarchy: the missing parents are created.
    assert await c.cmd(b"r2 RENAME Customers/Acme/2025 Archive/Acme/2025") == [
        b"r2 OK RENAME completed"
    ]
    assert "Archive/Acme" in await env.mailbox_names()
    c.writer.close()


async def test_rename_inbox_moves_its_messages(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"r RENAME INBOX Old-Inbox") == [b"r OK RENAME completed"]
    assert await c.cmd(b"s1 STATUS INBOX (MESSAGES)") == [
        b'* STATUS "INBOX" (MESSAGES 0)',
        b"s1 OK STATUS completed",
    ]
    assert await c.cmd(b"s2 STATUS Old-Inbox (MESSAGES UNSEEN)") == [
        b'* STATUS "Old-Inbox" (MESSAGES 3 UNSEEN 2)',
        b"s2 OK STATUS completed",
    ]
    c.writer.close()


async def test_rename_inbox_while_selected_reports_the_expunges(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd(b"r RENAME INBOX Moved") == [
        b"* 1 EXPUNGE",
        b"* 1 EXPUNGE",
        b"* 1 EXPUNGE",
        b"r OK RENAME completed",
    ]
    c.writer.close()


async def test_rename_errors(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"c CREATE Box/Inner")
    assert await c.cmd(b"r1 RENAME Nope Other") == [
        b"r1 NO [NONEXISTENT] Mailbox does not exist: Nope"
    ]
    assert await c.cmd(b"r2 RENAME Box Sent") == [
        b"r2 NO [ALREADYEXISTS] Mailbox already exists: Sent"
    ]
    assert await c.cmd(b"r3 RENAME Box INBOX") == [
        b"r3 NO [ALREADYEXISTS] Mailbox already exists: INBOX"
    ]
    inferior = await c.cmd(b"r4 RENAME Box Box/Inner/Deeper")
    assert inferior[-1].startswith(b"r4 NO [CANNOT] Cannot rename mailbox: cannot rename")
    assert (await c.cmd(b"r5 RENAME Box"))[-1].startswith(b"r5 BAD ")
    assert (await c.cmd(b"r6 RENAME"))[-1].startswith(b"r6 BAD ")
    assert (await c.cmd(b"r7 RENAME Box New extra"))[-1].startswith(b"r7 BAD ")
    assert await c.cmd(b'r8 RENAME Box ""') == [b"r8 NO [CANNOT] Empty mailbox name"]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_selected_mailbox_renamed_stays_selected(env: Env) -> None:
    other = await Client.login(env)
    await other.cmd(b"c CREATE Team")
    await env.deliver("team news", mailbox="Team")
    c = await Client.selected(env, mailbox="Team")
    # Renamed by another session: same messages, same UIDs, the new name once the store's
    # event has arrived (ADR 13; a command before it ends the session, the mailbox being gone).
    assert await other.cmd(b"r RENAME Team Group") == [b"r OK RENAME completed"]
    await env.selected_as("Group")
    assert await c.cmd(b"f FETCH 1 (UID FLAGS)") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Recent))",  # this session was the first to select it
        b"f OK FETCH completed",
    ]
    await env.deliver("more news", mailbox="Group")
    assert await c.cmd(b"n NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"n OK NOOP completed"]
    # Renamed by this session: the same.
    assert await c.cmd(b"r RENAME Group Crew") == [b"r OK RENAME completed"]
    await env.deliver("crew", mailbox="Crew")
    assert await c.cmd(b"n NOOP") == [b"* 3 EXISTS", b"* 3 RECENT", b"n OK NOOP completed"]
    other.writer.close()
    c.writer.close()


# -- SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7-8) ---------------------------------------------------


async def test_subscribe_and_unsubscribe(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"s1 SUBSCRIBE Archive/2024") == [b"s1 OK SUBSCRIBE completed"]
    assert await c.cmd(b'l LIST (SUBSCRIBED) "" *') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Archive/2024"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b"l OK LIST completed",
    ]
    assert await c.cmd(b"u1 UNSUBSCRIBE Sent") == [b"u1 OK UNSUBSCRIBE completed"]
    assert await c.cmd(b'l2 LSUB "" *') == [
        b'* LSUB (\\HasNoChildren) "/" "INBOX"',
        b'* LSUB (\\HasNoChildren) "/" "Archive/2024"',
        b"l2 OK LSUB completed",
    ]
    # Subscribing to a missing mailbox is refused (as Dovecot does); unsubscribing a name
    # that is not subscribed (or no mailbox) is fine.
    assert await c.cmd(b"s2 SUBSCRIBE Nope") == [
        b"s2 NO [NONEXISTENT] Mailbox does not exist: Nope"
    ]
    assert await c.cmd(b"u2 UNSUBSCRIBE Nope") == [b"u2 OK UNSUBSCRIBE completed"]
    assert (await c.cmd(b"s3 SUBSCRIBE"))[-1].startswith(b"s3 BAD ")
    assert (await c.cmd(b"u3 UNSUBSCRIBE a b"))[-1].startswith(b"u3 BAD ")
    assert (await c.cmd(b'u4 UNSUBSCRIBE "x*"'))[-1].startswith(b"u4 NO [CANNOT]")
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_subscription_outlives_its_mailbox(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"c CREATE Temp")
    await c.cmd(b"s SUBSCRIBE Temp")
    await c.cmd(b"d DELETE Temp")
    # RFC 5258 §3.4 / RFC 9051 §6.3.9: a subscribed name that is no mailbox is \NonExistent.
    assert await c.cmd(b'l LIST (SUBSCRIBED) "" Temp') == [
        b'* LIST (\\NonExistent \\Subscribed) "/" "Temp"',
        b"l OK LIST completed",
    ]
    assert await c.cmd(b'l2 LSUB "" Temp') == [
        b'* LSUB (\\Noselect) "/" "Temp"',
        b"l2 OK LSUB completed",
    ]
    assert await c.cmd(b"u UNSUBSCRIBE Temp") == [b"u OK UNSUBSCRIBE completed"]
    assert await c.cmd(b'l3 LIST (SUBSCRIBED) "" Temp') == [b"l3 OK LIST completed"]
    c.writer.close()


@pytest.mark.parametrize(
    "command",
    [b"CREATE x", b"DELETE x", b"RENAME x y", b"SUBSCRIBE x", b"UNSUBSCRIBE x"],
)
async def test_mailbox_commands_need_login(env: Env, command: bytes) -> None:
    c = await Client.connect(env)
    assert await c.cmd(b"t " + command) == [b"t BAD Log in first"]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_store_down_is_a_temporary_failure(env: Env) -> None:
    c = await Client.login(env)
    env.mail.down = True
    assert await c.cmd(b"c CREATE x") == [
        b"c NO [UNAVAILABLE] Temporary server failure, try again later"
    ]
    assert await c.cmd(b'l LIST "" *') == [
        b"l NO [UNAVAILABLE] Temporary server failure, try again later"
    ]
    env.mail.down = False
    assert await c.cmd(b"c2 CREATE x") == [b"c2 OK CREATE completed"]
    c.writer.close()


async def test_renaming_a_parent_renames_the_selection_before_any_event(env: Env) -> None:
    """The store's rename events may reach this replica after the session's next command: the
    session renames its own selection at once (here the sessions hear of no events)."""
    other = await Client.login(env)
    await other.cmd(b"c CREATE Clients/Acme")
    await env.deliver("acme", mailbox="Clients/Acme")
    c = await Client.selected(env, mailbox="Clients/Acme")
    await env.stop_events()
    assert await c.cmd(b"r RENAME Clients Customers") == [b"r OK RENAME completed"]
    await env.add(env.make_message("after"), mailbox="Customers/Acme")
    assert await c.cmd(b"n NOOP") == [b"* 2 EXISTS", b"* 2 RECENT", b"n OK NOOP completed"]
    other.writer.close()
    c.writer.close()
