"""SEARCH / UID SEARCH over the wire, every search key of RFC 9051 §6.4.4 (and the RFC 3501 keys
NEW, OLD, RECENT), CHARSET, literals, sequence sets and ``$``. The fake store runs the store's
own evaluator, so these transcripts check the real matching semantics end to end."""

from __future__ import annotations

import calendar
from typing import TYPE_CHECKING

import pytest
from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


def _day(y: int, m: int, d: int, hour: int = 12) -> int:
    return calendar.timegm((y, m, d, hour, 0, 0))


# (headers, body, flags, internal date): message N of the "Search" mailbox, UID N.
MESSAGES: list[tuple[str, str, tuple[str, ...], int]] = [
    (
        "From: Alice Smith <alice@example.org>\r\nTo: bob@example.com\r\n"
        "Cc: carol@example.net\r\nSubject: Quarterly report\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n",
        "Numbers are up this quarter.\r\n",
        ("\\Seen", "\\Answered"),
        _day(2024, 1, 1),
    ),
    (
        "From: bob@example.com\r\nTo: alice@example.org\r\nBcc: dave@example.com\r\n"
        "Subject: Lunch?\r\nDate: Thu, 15 Feb 2024 09:30:00 +0000\r\n",
        "Pizza at noon?\r\n",
        ("\\Flagged", "$Work"),
        _day(2024, 2, 15),
    ),
    (
        "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.de>\r\nTo: alice@example.org\r\n"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Sun, 10 Mar 2024 23:00:00 +0000\r\n"
        "X-Priority: 1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n",
        "Schöne Grüße aus Köln\r\n",
        ("\\Deleted", "\\Seen"),
        _day(2024, 3, 10),
    ),
    (
        "From: alice@example.org\r\nTo: erin@example.com\r\nSubject: Draft reply\r\n",
        "Not finished. " * 200 + "\r\n",
        ("\\Draft",),
        _day(2024, 3, 10),
    ),
    (
        "From: Carol <carol@example.net>\r\nTo: alice@example.org\r\n"
        "Subject: Re: Quarterly report\r\nDate: Tue, 12 Mar 2024 08:00:00 +0000\r\n",
        "Numbers? Which numbers?\r\n",
        (),
        _day(2024, 3, 12),
    ),
]


@pytest.fixture
async def box(env: Env) -> Env:
    """``env`` with the "Search" mailbox filled with MESSAGES (UIDs 1-5, MODSEQ 2-6: the
    store gave the new mailbox MODSEQ 1)."""
    await env.store.app.repo.create_mailbox(env.user, "Search")
    for headers, body, flags, date in MESSAGES:
        await env.add((headers + "\r\n" + body).encode(), flags, "Search", date)
    return env


async def _search(c: Client, criteria: bytes, tag: bytes = b"s") -> list[bytes]:
    return await c.cmd(tag + b" SEARCH " + criteria)


async def _hits(c: Client, criteria: bytes, *, uid: bool = False) -> list[int]:
    """The numbers a classic ``* SEARCH`` answer lists (asserts the OK)."""
    reply = await c.cmd(b"s " + (b"UID " if uid else b"") + b"SEARCH " + criteria)
    assert reply[-1].startswith(b"s OK"), (criteria, reply)
    lines = [line for line in reply if line.startswith(b"* SEARCH")]
    assert len(lines) == 1, (criteria, reply)
    return [int(n) for n in lines[0].split()[2:]]


KEYS: list[tuple[bytes, list[int]]] = [
    (b"ALL", [1, 2, 3, 4, 5]),
    (b"ANSWERED", [1]),
    (b"UNANSWERED", [2, 3, 4, 5]),
    (b"DELETED", [3]),
    (b"UNDELETED", [1, 2, 4, 5]),
    (b"DRAFT", [4]),
    (b"UNDRAFT", [1, 2, 3, 5]),
    (b"FLAGGED", [2]),
    (b"UNFLAGGED", [1, 3, 4, 5]),
    (b"SEEN", [1, 3]),
    (b"UNSEEN", [2, 4, 5]),
    (b"KEYWORD $Work", [2]),
    (b"KEYWORD $work", [2]),  # flags are case-insensitive atoms (RFC 9051 §9)
    (b"UNKEYWORD $Work", [1, 3, 4, 5]),
    (b"KEYWORD $Nothing", []),
    (b"FROM alice", [1, 4]),
    (b'FROM "Alice Smith"', [1]),
    (b'FROM "m\xc3\xbcller"', [3]),  # the decoded encoded-word (RFC 2047)
    (b"TO alice@example.org", [2, 3, 5]),
    (b"CC carol", [1]),
    (b"BCC dave", [2]),
    (b"SUBJECT quarterly", [1, 5]),
    (b'SUBJECT "re: quarterly"', [5]),
    (b'SUBJECT "gr\xc3\xbc\xc3\x9fe"', [3]),
    (b'SUBJECT ""', [1, 2, 3, 4, 5]),  # empty string: every message with the field
    (b"HEADER X-Priority 1", [3]),
    (b'HEADER x-priority ""', [3]),
    (b'HEADER Date ""', [1, 2, 3, 5]),
    (b"BODY numbers", [1, 5]),
    (b"BODY Alice", []),  # BODY is not the header
    (b'BODY "k\xc3\xb6ln"', [3]),  # decoded 8-bit body text
    (b"TEXT alice", [1, 2, 3, 4, 5]),  # header or body
    (b"TEXT pizza", [2]),
    (b"LARGER 1000", [4]),
    (b"SMALLER 1000", [1, 2, 3, 5]),
    (b"BEFORE 15-Feb-2024", [1]),
    (b"ON 15-Feb-2024", [2]),
    (b'ON "10-Mar-2024"', [3, 4]),  # a quoted date
    (b"SINCE 10-Mar-2024", [3, 4, 5]),
    (b"SINCE 1-mar-2024", [3, 4, 5]),  # month names in any case
    (b"SENTBEFORE 15-Feb-2024", [1]),
    (b"SENTON 10-Mar-2024", [3]),
    (b"SENTSINCE 15-Feb-2024", [2, 3, 5]),  # 4 has no Date: field
    (b"NOT SEEN", [2, 4, 5]),
    (b"NOT NOT SEEN", [1, 3]),
    (b"OR SEEN FLAGGED", [1, 2, 3]),
    (b"OR (SEEN DELETED) DRAFT", [3, 4]),
    (b"OR OR ANSWERED DRAFT FLAGGED", [1, 2, 4]),
    (b"SEEN UNDELETED", [1]),  # keys in a row are ANDed
    (b"(SEEN UNDELETED)", [1]),
    (b"((SEEN) (UNDELETED))", [1]),
    (b"NOT (SEEN UNDELETED)", [2, 3, 4, 5]),
    (b"FROM alice (OR DRAFT ANSWERED) NOT LARGER 5000", [1, 4]),
    (b"UID 2,4", [2, 4]),
    (b"UID 4:2", [2, 3, 4]),
    (b"UID *", [5]),
    (b"UID 3:*", [3, 4, 5]),
    (b"UID 99:*", [5]),  # n:* includes the highest UID (RFC 9051 §6.4.4)
    (b"UID 99", []),
    (b"1", [1]),
    (b"2:4", [2, 3, 4]),
    (b"4:2", [2, 3, 4]),
    (b"*", [5]),
    (b"3:*", [3, 4, 5]),
    (b"1,3,5", [1, 3, 5]),
    (b"2,1:2", [1, 2]),
    (b"9", []),  # no such message: matches nothing (SEARCH is not FETCH)
    (b"2:4 NOT 3", [2, 4]),
    (b"all seen", [1, 3]),  # key names in any case
    # RFC 3501 keys: this session is the first to select the mailbox, so every message is
    # \Recent here (RFC 3501 §2.3.2); NEW is RECENT UNSEEN.
    (b"RECENT", [1, 2, 3, 4, 5]),
    (b"NEW", [2, 4, 5]),
    (b"OLD", []),
]


async def test_every_search_key(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    for criteria, expected in KEYS:
        assert await _hits(c, criteria) == expected, criteria
    await c.close()


async def test_uid_search_returns_uids_and_seq_numbers_follow_expunges(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    # Expunge message 3 (the one with \Deleted): UIDs 1 2 4 5 are now numbers 1 2 3 4.
    assert await c.cmd(b"e EXPUNGE") == [b"* 3 EXPUNGE", b"e OK EXPUNGE completed"]
    assert await _hits(c, b"ALL") == [1, 2, 3, 4]
    assert await _hits(c, b"ALL", uid=True) == [1, 2, 4, 5]
    assert await _hits(c, b"DRAFT") == [3]
    assert await _hits(c, b"DRAFT", uid=True) == [4]
    # Sequence numbers in the criteria of UID SEARCH are still sequence numbers.
    assert await _hits(c, b"3:4", uid=True) == [4, 5]
    assert await _hits(c, b"UID 3:4") == [3]  # UID 4 is message 3; UID 3 is gone
    assert await _hits(c, b"UID 3") == []
    assert await _hits(c, b"*", uid=True) == [5]
    await c.close()


async def test_search_does_not_report_expunges_uid_search_does(box: Env) -> None:
    """RFC 9051 §7.5.1: no EXPUNGE while answering SEARCH (the numbers in ``* SEARCH`` are the
    client's current ones); UID SEARCH may report it."""
    c = await Client.selected(box, mailbox="Search")
    await box.expunge_elsewhere([2], mailbox="Search")
    reply = await c.cmd(b"s SEARCH ALL")
    assert reply == [b"* SEARCH 1 3 4 5", b"s OK SEARCH completed"]
    reply = await c.cmd(b"u UID SEARCH ALL")
    assert reply == [b"* SEARCH 1 3 4 5", b"* 2 EXPUNGE", b"u OK UID SEARCH completed"]
    assert await _hits(c, b"ALL") == [1, 2, 3, 4]
    await c.close()


async def test_new_message_is_found_once_announced(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    await box.deliver("late arrival", mailbox="Search")
    reply = await c.cmd(b"s SEARCH SUBJECT late")
    # The new message gets its number with the EXISTS after the answer: the search itself
    # covers only the messages the client knows (RFC 9051 §7.5.2).
    # It is \Recent here too: this session is the first told of it (RFC 3501 §7.3.2).
    assert reply == [b"* SEARCH", b"* 6 EXISTS", b"* 6 RECENT", b"s OK SEARCH completed"]
    assert await _hits(c, b"SUBJECT late") == [6]
    await c.close()


async def test_charset(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    assert await _hits(c, b'CHARSET UTF-8 SUBJECT "gr\xc3\xbc\xc3\x9fe"') == [3]
    assert await _hits(c, b'CHARSET utf-8 BODY "k\xc3\xb6ln"') == [3]
    assert await _hits(c, b'CHARSET "US-ASCII" FROM alice') == [1, 4]
    assert await c.cmd(b"b SEARCH CHARSET KOI8-R SUBJECT x") == [
        b"b NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset 'KOI8-R'"
    ]
    reply = await c.cmd(b"b SEARCH CHARSET ISO-8859-1 ALL")
    assert reply[0].startswith(b"b NO [BADCHARSET (UTF-8 US-ASCII)]"), reply
    # Not UTF-8 at all: the string cannot be searched for.
    reply = await c.cmd(b'b SEARCH CHARSET UTF-8 SUBJECT "gr\xfc\xdfe"')
    assert reply[0].startswith(b"b BAD "), reply
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    await c.close()


async def test_no_charset_after_utf8_accept(box: Env) -> None:
    """RFC 6855 §3 (erratum 4029): once UTF8=ACCEPT is enabled, SEARCH carries no CHARSET (BAD);
    UTF-8 strings are searched as such."""
    c = await Client.login(box)
    assert await c.cmd(b"e ENABLE UTF8=ACCEPT") == [
        b"* ENABLED UTF8=ACCEPT",
        b"e OK ENABLE completed",
    ]
    assert (await c.cmd(b"s SELECT Search"))[-1].startswith(b"s OK")
    reply = await c.cmd(b"a SEARCH CHARSET UTF-8 ALL")
    assert len(reply) == 1 and reply[0].startswith(b"a BAD "), reply
    assert await _hits(c, b'SUBJECT "gr\xc3\xbc\xc3\x9fe"') == [3]
    await c.close()


async def test_literals_in_search_strings(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    # Synchronizing literal: the server asks for the data with "+".
    await c.send(b"l1 SEARCH CHARSET UTF-8 SUBJECT {7}")
    assert (await c.line()).startswith(b"+ ")
    await c.send("Grüße".encode())
    assert [await c.line(), await c.line()] == [b"* SEARCH 3", b"l1 OK SEARCH completed"]
    # LITERAL+ (RFC 7888): no continuation; two literals in one command.
    await c.send(b"l2 SEARCH FROM {5+}\r\nalice SUBJECT {6+}\r\nreport")
    assert [await c.line(), await c.line()] == [b"* SEARCH 1", b"l2 OK SEARCH completed"]
    # A literal may hold what a quoted string cannot: a quote and a CR LF.
    await c.send(b'l3 HEADER Subject {3+}\r\n"\r\n')
    reply = await c.line()
    assert reply.startswith(b"l3 BAD"), reply  # "HEADER" alone is not a command
    await c.send(b'l4 SEARCH HEADER Subject {3+}\r\n"\r\n')
    assert [await c.line(), await c.line()] == [b"* SEARCH", b"l4 OK SEARCH completed"]
    await c.close()


async def test_saved_result_dollar(box: Env) -> None:
    """RFC 5182: SAVE keeps the result as ``$``; ``$`` as a sequence set and as ``UID $``."""
    c = await Client.selected(box, mailbox="Search")
    # An unset $ is empty (RFC 5182 §2.1): it matches nothing, and is not an error.
    assert await _hits(c, b"$") == []
    assert await c.cmd(b"a SEARCH RETURN (SAVE) SEEN") == [b"a OK SEARCH completed"]
    assert await _hits(c, b"$") == [1, 3]
    assert await _hits(c, b"UID $") == [1, 3]
    assert await _hits(c, b"NOT $") == [2, 4, 5]
    assert await _hits(c, b"OR $ DRAFT") == [1, 3, 4]
    assert await _hits(c, b"$", uid=True) == [1, 3]
    # $ stays as UIDs: after an expunge of message 1 it holds what was message 3, now 2.
    assert await c.cmd(b"d STORE 1 +FLAGS.SILENT (\\Deleted)") == [b"d OK STORE completed"]
    assert (await c.cmd(b"e EXPUNGE"))[:2] == [b"* 1 EXPUNGE", b"* 2 EXPUNGE"]
    assert await _hits(c, b"$") == []  # both saved messages are gone
    assert await c.cmd(b"b SEARCH RETURN (SAVE) DRAFT") == [b"b OK SEARCH completed"]
    assert await _hits(c, b"$") == [2]
    assert await _hits(c, b"$", uid=True) == [4]
    # Selecting a mailbox (even the same one) empties $ (RFC 5182 §2.1).
    assert (await c.cmd(b"x SELECT Search"))[-1].startswith(b"x OK")
    assert await _hits(c, b"$") == []
    # $ must stand alone as a sequence set.
    for bad in (b"$,1", b"1,$", b"$:3", b"UID $,2"):
        reply = await _search(c, bad)
        assert len(reply) == 1 and reply[0].startswith(b"s BAD "), (bad, reply)
    await c.close()


async def test_modseq_search(box: Env) -> None:
    """RFC 7162 §3.1.5: MODSEQ criterion; the answer carries the highest MODSEQ of the matches."""
    c = await Client.selected(box, mailbox="Search")
    # The store gave messages 1-5 MODSEQ 2-6 as they were added.
    assert await c.cmd(b"a SEARCH MODSEQ 5") == [
        b"* SEARCH 4 5 (MODSEQ 6)",
        b"a OK SEARCH completed",
    ]
    assert await c.cmd(b"b UID SEARCH MODSEQ 3 SEEN") == [
        b"* SEARCH 3 (MODSEQ 4)",
        b"b OK UID SEARCH completed",
    ]
    # The entry-name form is accepted; MODSEQ then still names the message's MODSEQ.
    assert await c.cmd(b'c SEARCH MODSEQ "/flags/\\\\draft" all 5') == [
        b"* SEARCH 4 5 (MODSEQ 6)",
        b"c OK SEARCH completed",
    ]
    # No match: no MODSEQ part (RFC 7162 §3.1.5 "search-sort-mod-seq" only with results).
    assert await c.cmd(b"d SEARCH MODSEQ 99") == [b"* SEARCH", b"d OK SEARCH completed"]
    # A STORE raises the message's MODSEQ. The MODSEQ key enabled CONDSTORE (RFC 7162 §3.1),
    # so even a .SILENT STORE reports the new MODSEQ (§3.2).
    assert await c.cmd(b"e STORE 2 +FLAGS.SILENT (\\Seen)") == [
        b"* 2 FETCH (MODSEQ (7))",
        b"e OK STORE completed",
    ]
    reply = await c.cmd(b"f SEARCH MODSEQ 7")
    assert reply == [b"* SEARCH 2 (MODSEQ 7)", b"f OK SEARCH completed"], reply
    for bad in (
        b"MODSEQ",
        b"MODSEQ x",
        b"MODSEQ 99999999999999999999",
        b'MODSEQ "/flags/\\\\seen" 5',  # entry name without its type
        b'MODSEQ "/flags/\\\\seen" mine 5',
        b'MODSEQ "/other/x" all 5',
    ):
        reply = await _search(c, bad)
        assert len(reply) == 1 and reply[0].startswith(b"s BAD "), (bad, reply)
    await c.close()


BAD_SEARCHES: list[bytes] = [
    b"s SEARCH",
    b"s SEARCH ",
    b"s SEARCH FROBNICATE",
    b"s SEARCH FROM",
    b"s SEARCH SUBJECT",
    b"s SEARCH HEADER Subject",
    b"s SEARCH HEADER",
    b's SEARCH HEADER "" x',
    b's SEARCH HEADER "Sub:ject" x',
    b"s SEARCH KEYWORD",
    b"s SEARCH KEYWORD (x)",
    b"s SEARCH LARGER",
    b"s SEARCH LARGER ten",
    b"s SEARCH SMALLER -1",
    b"s SEARCH LARGER 99999999999999999999",
    b"s SEARCH BEFORE",
    b"s SEARCH BEFORE 2024-01-01",
    b"s SEARCH BEFORE 32-Jan-2024",
    b"s SEARCH BEFORE 29-Feb-2023",
    b"s SEARCH ON 1-Foo-2024",
    b's SEARCH SINCE "1-Jan-2024',
    b"s SEARCH SENTON 1-Jan-24",
    b"s SEARCH NOT",
    b"s SEARCH OR SEEN",
    b"s SEARCH OR",
    b"s SEARCH (SEEN",
    b"s SEARCH SEEN)",
    b"s SEARCH ((SEEN)",
    b"s SEARCH ()",
    b"s SEARCH (SEEN  DRAFT)",
    b"s SEARCH SEEN  DRAFT",
    b"s SEARCH SEEN ",
    b"s SEARCH UID",
    b"s SEARCH UID 0",
    b"s SEARCH UID x",
    b"s SEARCH 0",
    b"s SEARCH 1:",
    b"s SEARCH 1,,2",
    b"s SEARCH 4294967296",
    b's SEARCH SUBJECT "unterminated',
    b"s SEARCH CHARSET",
    b"s SEARCH CHARSET UTF-8",
    b"s SEARCH RETURN",
    b"s SEARCH RETURN (MIN",
    b"s SEARCH RETURN (FOO) ALL",
    b"s SEARCH RETURN (MIN)",
    b"s SEARCH RETURN MIN ALL",
    b"s UID SEARCH",
    b"s UID SEARCH FROBNICATE",
]


async def test_bad_search_input_gets_bad_and_the_session_goes_on(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    for command in BAD_SEARCHES:
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"s BAD "), (command, reply)
        # A reason, not just "BAD".
        assert len(reply[0]) > len(b"s BAD ") + 5, reply
        # (and the count of consecutive bad commands starts again, or the session would end)
        assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    # Too deep or too many keys: refused, not a crash.
    reply = await c.cmd(b"s SEARCH " + b"(" * 200 + b"SEEN" + b")" * 200)
    assert reply[0].startswith(b"s BAD "), reply
    reply = await c.cmd(b"s SEARCH " + b"NOT " * 200 + b"SEEN")
    assert reply[0].startswith(b"s BAD "), reply
    reply = await c.cmd(b"s SEARCH " + b" ".join([b"SEEN"] * 2000))
    assert reply[0].startswith(b"s BAD "), reply
    assert await c.cmd(b"z NOOP") == [b"z OK NOOP completed"]
    assert await _hits(c, b"SEEN") == [1, 3]
    await c.close()


async def test_search_state_rules(box: Env) -> None:
    c = await Client.login(box)
    assert await c.cmd(b"a SEARCH ALL") == [b"a BAD No mailbox selected"]
    assert await c.cmd(b"b UID SEARCH ALL") == [b"b BAD No mailbox selected"]
    await c.close()
    c = await Client.connect(box)
    assert await c.cmd(b"a SEARCH ALL") == [b"a BAD Log in first"]
    await c.close()
    # EXAMINE: searching is reading.
    c = await Client.selected(box, "EXAMINE", "Search")
    assert await _hits(c, b"UNSEEN") == [2, 4, 5]
    await c.close()


async def test_search_in_an_empty_mailbox(box: Env) -> None:
    c = await Client.selected(box, mailbox="Sent")
    assert await _hits(c, b"ALL") == []
    assert await _hits(c, b"1:*") == []
    assert await c.cmd(b"a SEARCH RETURN (MIN MAX COUNT ALL) ALL") == [
        b'* ESEARCH (TAG "a") COUNT 0',
        b"a OK SEARCH completed",
    ]
    await c.close()


async def test_store_unavailable(box: Env) -> None:
    c = await Client.selected(box, mailbox="Search")
    box.mail.down = True
    reply = await c.cmd(b"a SEARCH ALL")
    assert reply == [b"a NO [UNAVAILABLE] Temporary server failure, try again later"], reply
    box.mail.down = False
    assert await _hits(c, b"ALL") == [1, 2, 3, 4, 5]
    await c.close()
