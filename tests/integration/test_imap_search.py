"""IMAP SEARCH against the real store (its search index, built at delivery), on the embedded
backends and on Kafka + FerretDB: mail goes in through SMTP submission, SEARCH comes back
through imaplib."""

from __future__ import annotations

import datetime
import imaplib
import re
import uuid
from typing import Any

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import create_user, insecure_tls, submit


def _message(sender: str, rcpt: str, subject: str, body: str, date: str) -> bytes:
    return (
        f"From: Sender <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <{uuid.uuid4().hex}@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    ).encode()


def _search(imap: imaplib.IMAP4, *criteria: str | bytes, uid: bool = False) -> list[int]:
    # imaplib takes bytes arguments too (literals), which typeshed does not say.
    args: tuple[Any, ...] = criteria
    typ, data = imap.uid("SEARCH", *args) if uid else imap.search(None, *args)
    assert typ == "OK", (criteria, data)
    return [int(n) for n in (data[0] or b"").split()]


def _esearch(imap: imaplib.IMAP4, *args: str) -> bytes:
    typ, data = imap._simple_command("SEARCH", *args)
    assert typ == "OK", (args, data)
    _, lines = imap._untagged_response(typ, data, "ESEARCH")
    assert len(lines) == 1, lines
    return lines[0]  # type: ignore[no-any-return]


def test_search_on_the_real_store(stack: Stack) -> None:
    user = f"search-{uuid.uuid4().hex[:8]}@example.test"
    password = "search-pass-1"
    create_user(stack, user, password)
    messages = [
        _message(user, user, "alpha report", "The quarterly numbers.\r\n",
                 "Mon, 1 Jan 2024 10:00:00 +0000"),
        _message(user, user, "beta lunch",
                 "Pizza at noon? Schöne Grüße\r\n" + "filler " * 500 + "\r\n",
                 "Thu, 15 Feb 2024 09:30:00 +0000"),
        _message(user, user, "Re: alpha report", "Which numbers?\r\n",
                 "Tue, 12 Mar 2024 08:00:00 +0000"),
    ]  # fmt: skip

    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        # Delivery handles records concurrently, so the UIDs follow submission order only when
        # each message is in the mailbox before the next is submitted.
        for count, msg in enumerate(messages, start=1):
            submit(stack, user, password, msg)

            def delivered(count: int = count) -> bool | None:
                typ, data = imap.select("INBOX")
                return (typ == "OK" and int(data[0] or 0) == count) or None

            wait_for(delivered, what=f"message {count} delivered")
        uids = _search(imap, "ALL", uid=True)
        assert len(uids) == 3
        assert _search(imap, "SUBJECT", "alpha") == [1, 3]
        assert _search(imap, "SUBJECT", '"re: alpha"') == [3]
        assert _search(imap, "FROM", user.split("@")[0]) == [1, 2, 3]
        assert _search(imap, "TO", "nobody") == []
        assert _search(imap, "BODY", "numbers") == [1, 3]
        assert _search(imap, "CHARSET", "UTF-8", "BODY", '"grüße"'.encode()) == [2]
        assert _search(imap, "TEXT", "pizza") == [2]
        assert _search(imap, "HEADER", "Content-Transfer-Encoding", "8bit") == [1, 2, 3]
        assert _search(imap, "LARGER", "2000") == [2]
        assert _search(imap, "NOT", "LARGER", "2000") == [1, 3]
        assert _search(imap, "SENTON", "15-Feb-2024") == [2]
        assert _search(imap, "SENTBEFORE", "1-Feb-2024") == [1]
        assert _search(imap, "SENTSINCE", "1-Mar-2024") == [3]
        today = datetime.datetime.now(datetime.UTC).date()
        since = (today - datetime.timedelta(days=1)).strftime("%d-%b-%Y")
        assert _search(imap, "SINCE", since) == [1, 2, 3]
        assert _search(imap, "BEFORE", since) == []
        # A UID range written high to low (RFC 9051 §9: either order).
        assert _search(imap, "UID", f"{uids[2]}:{uids[0]}", uid=True) == uids
        assert _search(imap, "UID", f"{uids[2] + 100}:*", uid=True) == [uids[2]]
        assert _search(imap, "OR", "SUBJECT", "beta", "3") == [2, 3]
        # Flags.
        assert imap.store("1", "+FLAGS", "(\\Seen $Work)")[0] == "OK"
        assert _search(imap, "UNSEEN") == [2, 3]
        assert _search(imap, "SEEN", "KEYWORD", "$Work") == [1]
        # ESEARCH and $.
        line = _esearch(imap, "RETURN", "(MIN MAX COUNT)", "ALL")
        assert re.fullmatch(rb'\(TAG "[^"]+"\) MIN 1 MAX 3 COUNT 3', line), line
        typ, data = imap._simple_command("SEARCH", "RETURN", "(SAVE)", "UNSEEN")
        assert typ == "OK"
        assert _search(imap, "$") == [2, 3]
        # MODSEQ (RFC 7162): the answer carries the highest MODSEQ of the matches.
        typ, data = imap.search(None, "MODSEQ", "1")
        assert typ == "OK" and data[0] is not None
        assert data[0].startswith(b"1 2 3 (MODSEQ "), data
        typ, data = imap.search("KOI8-R", "ALL")
        assert typ == "NO" and b"BADCHARSET" in data[0], data
        # SORT and THREAD (RFC 5256) from the store's metadata.
        assert imap.sort("(REVERSE DATE)", "UTF-8", "ALL") == ("OK", [b"3 2 1"])
        typ, data = imap.sort("(REVERSE SIZE)", "UTF-8", "NOT", "SUBJECT", "alpha")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = imap.sort("(REVERSE SIZE)", "UTF-8", "ALL")
        assert typ == "OK" and data[0] is not None and data[0].split()[0] == b"2", data
        typ, data = imap.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")
        assert (typ, data) == ("OK", [f"{uids[0]} {uids[2]} {uids[1]}".encode()])
        # "Re: alpha report" has no References, but its base subject makes it a reply of 1.
        assert imap.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(1 3)(2)"])
        assert imap.thread("ORDEREDSUBJECT", "UTF-8", "SINCE", since) == ("OK", [b"(1 3)(2)"])
