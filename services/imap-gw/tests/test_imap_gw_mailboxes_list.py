"""LIST with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), LSUB
(RFC 3501 §6.3.9), STATUS with every item (RFC 9051 §6.3.11, RFC 8438, RFC 7162) and modified
UTF-7 names, over the wire.

The fixture user has INBOX (3 messages: \\Seen, unseen, \\Flagged), Sent (\\Sent) and
Archive/2024 (not subscribed, under a parent that exists only by implication).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def test_capabilities_advertise_the_mailbox_extensions(env: Env) -> None:
    c = await Client.login(env)
    caps = (await c.cmd(b"c CAPABILITY"))[0].split()
    for cap in (
        b"CHILDREN",
        b"LIST-EXTENDED",
        b"LIST-STATUS",
        b"SPECIAL-USE",
        b"CREATE-SPECIAL-USE",
        b"ID",
        b"QUOTA",
        b"QUOTA=RES-STORAGE",
        b"QUOTA=RES-MESSAGE",
        b"NAMESPACE",
        b"STATUS=SIZE",
    ):
        assert cap in caps
    assert b"QUOTASET" not in caps  # SETQUOTA is refused
    c.writer.close()


async def test_list_basic_patterns(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b'l1 LIST "" *') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Archive"',
        b'* LIST (\\HasNoChildren) "/" "Archive/2024"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b"l1 OK LIST completed",
    ]
    assert await c.cmd(b'l2 LIST "" %') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\Noselect \\HasChildren) "/" "Archive"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b"l2 OK LIST completed",
    ]
    # The reference is prefixed to the pattern; INBOX is case-insensitive.
    assert await c.cmd(b"l3 LIST Archive/ %") == [
        b'* LIST (\\HasNoChildren) "/" "Archive/2024"',
        b"l3 OK LIST completed",
    ]
    assert await c.cmd(b'l4 LIST "" inbox') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b"l4 OK LIST completed",
    ]
    # Empty pattern: the delimiter and the reference's root.
    assert await c.cmd(b'l5 LIST Archive/2024 ""') == [
        b'* LIST (\\Noselect) "/" "Archive/"',
        b"l5 OK LIST completed",
    ]
    assert await c.cmd(b'l6 LIST "" Nothing*') == [b"l6 OK LIST completed"]
    c.writer.close()


async def test_list_extended_multiple_patterns_and_return_options(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b'l1 LIST "" (INBOX "Sent") RETURN (SUBSCRIBED CHILDREN)') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b"l1 OK LIST completed",
    ]
    # RFC 6154 §3 selection option: only the special-use mailboxes.
    assert await c.cmd(b'l2 LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)') == [
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b"l2 OK LIST completed",
    ]
    # REMOTE changes nothing here (no remote mailboxes); RETURN () is valid.
    assert await c.cmd(b'l3 LIST (REMOTE) "" Sent RETURN ()') == [
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b"l3 OK LIST completed",
    ]
    c.writer.close()


async def test_list_subscribed_recursivematch_childinfo(env: Env) -> None:
    """RFC 5258 §3.5: a parent that is not subscribed but has a subscribed
    descendant is listed with CHILDINFO when RECURSIVEMATCH is asked for."""
    c = await Client.login(env)
    await c.cmd(b"c CREATE Fruit/Apple")
    await c.cmd(b"s SUBSCRIBE Fruit/Apple")
    assert await c.cmd(b'l1 LIST (SUBSCRIBED) "" %') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b"l1 OK LIST completed",
    ]
    assert await c.cmd(b'l2 LIST (SUBSCRIBED RECURSIVEMATCH) "" %') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren) "/" "Fruit" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b"l2 OK LIST completed",
    ]
    c.writer.close()


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (b'LIST (BOGUS) "" *', b"t BAD Unsupported LIST selection option BOGUS"),
        (b'LIST (RECURSIVEMATCH) "" *', b"t BAD RECURSIVEMATCH requires another selection option"),
        (
            b'LIST (RECURSIVEMATCH REMOTE) "" *',
            b"t BAD RECURSIVEMATCH requires another selection option",
        ),
        (b'LIST "" * RETURN (MYRIGHTS)', b"t BAD Unsupported LIST return option MYRIGHTS"),
        (b'LIST "" * RETURN (STATUS (BOGUS))', b"t BAD Unknown STATUS item BOGUS"),
        (b'LIST "" * RETURN (STATUS ())', b"t BAD STATUS return option needs at least one item"),
        (b'LIST "" * RETURN (STATUS)', None),
        (b'LIST "" * BOGUS (X)', b"t BAD expected RETURN after the mailbox patterns"),
        (b'LIST "" * RETURN SUBSCRIBED', None),
        (b"LIST", None),
        (b'LIST ""', None),
        (b'LIST "" (INBOX', None),
        (b'LIST "" ()', None),
        (
            b'LIST "" &Jjo',
            b"t BAD Invalid mailbox name: unterminated &...- sequence in mailbox name",
        ),
        (b'LSUB "" * extra', None),
        (b'LSUB ""', None),
    ],
)
async def test_list_bad_input(env: Env, command: bytes, reply: bytes | None) -> None:
    c = await Client.login(env)
    got = await c.cmd(b"t " + command)
    if reply is None:
        assert len(got) == 1 and got[0].startswith(b"t BAD "), got
    else:
        assert got == [reply]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_list_status_return_option(env: Env) -> None:
    """RFC 5819: a STATUS response right after each selectable mailbox's LIST response;
    none for a \\Noselect one."""
    c = await Client.login(env)
    assert await c.cmd(b'l LIST "" * RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))') == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2 UIDNEXT 4)',
        b'* LIST (\\Noselect \\HasChildren) "/" "Archive"',
        b'* LIST (\\HasNoChildren) "/" "Archive/2024"',
        b'* STATUS "Archive/2024" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)',
        b"l OK LIST completed",
    ]
    c.writer.close()


async def test_status_every_item(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"s SELECT INBOX")
    await c.cmd(b"st STORE 2 +FLAGS (\\Deleted)")
    await c.cmd(b"u UNSELECT")
    size = sum(m.size for m in await env.store.messages(env.user))
    inbox = await env.store.app.repo.get_mailbox(env.user, "INBOX")
    items = b"MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ RECENT"
    reply = await c.cmd(b"s1 STATUS INBOX (" + items + b")")
    assert reply == [
        b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2 DELETED 1 SIZE %d'
        b" HIGHESTMODSEQ %d RECENT 0)" % (inbox.uidvalidity, size, inbox.highestmodseq),
        b"s1 OK STATUS completed",
    ]
    # Items once each, in the order asked; lower case is fine.
    assert await c.cmd(b"s2 STATUS inbox (messages MESSAGES deleted)") == [
        b'* STATUS "INBOX" (MESSAGES 3 DELETED 1)',
        b"s2 OK STATUS completed",
    ]
    c.writer.close()


async def test_status_errors(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"s1 STATUS Nope (MESSAGES)") == [
        b"s1 NO [NONEXISTENT] Mailbox does not exist: Nope"
    ]
    await c.cmd(b"c CREATE Top/Child")
    await c.cmd(b"d DELETE Top")  # Top stays as \Noselect
    assert await c.cmd(b"s2 STATUS Top (MESSAGES)") == [
        b"s2 NO [NONEXISTENT] Mailbox is not selectable: Top"
    ]
    assert await c.cmd(b"s3 STATUS INBOX (BOGUS)") == [b"s3 BAD Unknown STATUS item BOGUS"]
    assert (await c.cmd(b"s4 STATUS INBOX ()"))[-1].startswith(b"s4 BAD ")
    assert (await c.cmd(b"s5 STATUS INBOX"))[-1].startswith(b"s5 BAD ")
    assert (await c.cmd(b"s6 STATUS (MESSAGES)"))[-1].startswith(b"s6 BAD ")
    assert (await c.cmd(b"s7 STATUS INBOX MESSAGES"))[-1].startswith(b"s7 BAD ")
    # IMAP4rev2 has no RECENT (RFC 9051 appendix E).
    await c.cmd(b"e ENABLE IMAP4rev2")
    assert await c.cmd(b"s8 STATUS INBOX (RECENT)") == [b"s8 BAD Unknown STATUS item RECENT"]
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_status_needs_login(env: Env) -> None:
    c = await Client.connect(env)
    assert await c.cmd(b"s STATUS INBOX (MESSAGES)") == [b"s BAD Log in first"]
    c.writer.close()


async def test_lsub_percent_lists_unsubscribed_parents_as_noselect(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"s SUBSCRIBE Archive/2024")
    assert await c.cmd(b'l1 LSUB "" %') == [
        b'* LSUB (\\HasNoChildren) "/" "INBOX"',
        b'* LSUB (\\Noselect \\HasChildren) "/" "Archive"',
        b'* LSUB (\\HasNoChildren \\Sent) "/" "Sent"',
        b"l1 OK LSUB completed",
    ]
    assert await c.cmd(b'l2 LSUB "" ""') == [b'* LSUB (\\Noselect) "/" ""', b"l2 OK LSUB completed"]
    c.writer.close()


async def test_modified_utf7_names_unless_utf8_is_enabled(env: Env) -> None:
    c = await Client.login(env)
    # "Entwürfe" in modified UTF-7 (RFC 3501 §5.1.3).
    assert await c.cmd(b"c CREATE Entw&APw-rfe/M&AOQ-rz") == [b"c OK CREATE completed"]
    assert "Entwürfe/März" in [m.name for m in await env.store.app.repo.list_mailboxes(env.user)]
    assert await c.cmd(b'l LIST "" Entw*') == [
        b'* LIST (\\HasChildren) "/" "Entw&APw-rfe"',
        b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe/M&AOQ-rz"',
        b"l OK LIST completed",
    ]
    assert await c.cmd(b"s STATUS Entw&APw-rfe (MESSAGES)") == [
        b'* STATUS "Entw&APw-rfe" (MESSAGES 0)',
        b"s OK STATUS completed",
    ]
    assert await c.cmd(b"e ENABLE UTF8=ACCEPT") == [
        b"* ENABLED UTF8=ACCEPT",
        b"e OK ENABLE completed",
    ]
    assert await c.cmd('r RENAME "Entwürfe" "Brouillons ✉"'.encode()) == [b"r OK RENAME completed"]
    assert await c.cmd(b'l2 LIST "" Brou*') == [
        '* LIST (\\HasChildren) "/" "Brouillons ✉"'.encode(),
        '* LIST (\\HasNoChildren) "/" "Brouillons ✉/März"'.encode(),
        b"l2 OK LIST completed",
    ]
    c.writer.close()
