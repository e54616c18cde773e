"""SORT and THREAD (RFC 5256, SORT=DISPLAY RFC 5957): the base subject and the threading
algorithms as pure functions, then transcripts over the wire against the store's own
evaluator. The same corpus of tricky messages was answered identically by Dovecot 2.3 for
every sort key and both algorithms (ADR 91)."""

from __future__ import annotations

import calendar
from typing import TYPE_CHECKING

import pytest
from imap_wire import Client

from postmesh.imap_gw.sort_keys import Fields, base_subject, sent_date
from postmesh.imap_gw.threads import ordered_subject, references, render

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


@pytest.mark.parametrize(
    ("subject", "base", "marked"),
    [
        ("Project plan", "Project plan", False),
        ("Re: Project plan", "Project plan", True),
        ("RE: [team] Re: Project plan", "Project plan", True),
        ("Fwd: Project plan", "Project plan", True),
        ("Fw: Fwd: Re: project PLAN", "project PLAN", True),
        ("[fwd: Project plan]", "Project plan", True),
        ("Project plan (fwd)", "Project plan", True),
        ("Re: [fwd: Re: x] (fwd)", "x", True),
        ("   Re:   Re: [x] [y]   spaced    out  ", "spaced out", True),
        ("[only blob]", "[only blob]", False),  # step (4): removing it would leave nothing
        ("[list] topic", "topic", False),
        ("Re[2]: topic", "topic", True),
        ("=?utf-8?b?w4RwZmVs?= und Birnen", "Äpfel und Birnen", False),
        ("Reply: not a marker", "Reply: not a marker", False),
        ("", "", False),
        (None, "", False),
    ],
)
def test_base_subject(subject: str | None, base: str, marked: bool) -> None:
    assert base_subject(subject) == (base, marked)


def test_sent_date_falls_back_to_the_internal_date() -> None:
    f = Fields(1, 1000, 10, date="Mon, 7 Dec 2026 11:00:00 +0100")
    assert sent_date(f) == calendar.timegm((2026, 12, 7, 10, 0, 0))
    assert sent_date(Fields(1, 1000, 10, date="garbage")) == 1000
    assert sent_date(Fields(1, 1000, 10)) == 1000


def _msg(uid: int, subject: str, mid: str, refs: str = "", day: int = 0) -> Fields:
    return Fields(uid, 1_700_000_000 + day * 86400 + uid, 100, None, subject, message_id=mid,
                  references=refs)  # fmt: skip


def _uids(roots: list) -> bytes:  # type: ignore[type-arg]
    return render(roots, lambda f: f.uid)


def test_references_links_replies_and_prunes_the_missing_parent() -> None:
    msgs = [
        _msg(1, "plan", "<a1>"),
        _msg(2, "Re: plan", "<a2>", "<a1>"),
        _msg(3, "Re: plan", "<a3>", "<a1> <a2>"),
        _msg(4, "Re: plan", "<a4>", "<a1>"),
        # Both reply to a message that is not here: its dummy groups them at the top.
        _msg(5, "orphan", "<d2>", "<gone>"),
        _msg(6, "Re: orphan", "<d3>", "<gone>"),
        # No links, but the same base subject as 1, and a reply: a child of 1's thread? No:
        # 1 is a root with children, this one becomes its child (step 5, a reply).
        _msg(7, "Re: plan", "<a9>"),
        _msg(8, "other", "<o1>"),
    ]
    assert _uids(references(msgs)) == b"(1 (2 3)(4)(7))((5)(6))(8)"


def test_references_survives_loops_duplicate_ids_and_a_long_chain() -> None:
    msgs = [
        _msg(1, "a", "<e1>", "<e2>"),
        _msg(2, "b", "<e2>", "<e1>"),  # a loop: not linked both ways
        _msg(3, "c", "<dup>"),
        _msg(4, "d", "<dup>"),  # the second <dup> is a message of its own
        _msg(5, "e", "", "<e1>"),  # no Message-ID at all
    ]
    assert _uids(references(msgs)) == b"(2 1 5)(3)(4)"
    # A 3,000-message reply chain: no recursion limit anywhere.
    chain = [_msg(i, "x", f"<c{i}>", f"<c{i - 1}>" if i > 1 else "") for i in range(1, 3001)]
    out = _uids(references(chain))
    assert out.startswith(b"(1 2 3 ") and out.endswith(b" 2999 3000)")


def test_ordered_subject_groups_by_base_subject_and_date() -> None:
    msgs = [
        _msg(1, "b topic", "<1>", day=3),
        _msg(2, "a topic", "<2>", day=2),
        _msg(3, "Re: b topic", "<3>", day=1),
        _msg(4, "Re: a topic", "<4>", day=4),
        _msg(5, "Fwd: b topic", "<5>", day=5),
    ]
    # Threads by the date of their first message; the others are children of the first.
    assert _uids(ordered_subject(msgs)) == b"(3 (1)(5))(2 4)"


# -- over the wire --------------------------------------------------------------------------


def _day(d: int) -> int:
    return calendar.timegm((2026, 12, d, 12, 0, 0))


# (headers, internal date): message N of the "Sort" mailbox, UID N.
MESSAGES: list[tuple[str, int]] = [
    ("From: Carol <carol@x.test>\r\nTo: bob@x.test\r\nSubject: Plan\r\n"
     "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <p1@x>\r\n", _day(3)),
    ("From: alice@x.test\r\nTo: carol@x.test\r\nCc: zed@x.test\r\nSubject: Re: plan\r\n"
     "Date: Mon, 7 Dec 2026 12:00:00 +0100\r\nMessage-ID: <p2@x>\r\nReferences: <p1@x>\r\n",
     _day(1)),
    ("From: Bob <bob@x.test>\r\nTo: alice@x.test\r\nSubject: =?utf-8?q?=C3=84pfel?=\r\n"
     "Message-ID: <q1@x>\r\n", _day(2)),
    ("From: dave@x.test\r\nTo: Group: a@x.test;\r\nCc: amy@x.test\r\nSubject: [list] Zebra\r\n"
     "Date: Sun, 6 Dec 2026 09:00:00 +0000\r\nMessage-ID: <z1@x>\r\n"
     "In-Reply-To: <p2@x>\r\n", _day(4)),
]  # fmt: skip


@pytest.fixture
async def box(env: Env) -> Env:
    await env.store.app.repo.create_mailbox(env.user, "Sort")
    for i, (headers, date) in enumerate(MESSAGES):
        await env.add(
            (headers + "\r\n" + "x" * (500 * (4 - i)) + "\r\n").encode(), (), "Sort", date
        )
    return env


async def _sorted(c: Client, command: bytes) -> list[int]:
    reply = await c.cmd(b"s " + command)
    assert reply[-1].startswith(b"s OK"), (command, reply)
    [line] = [x for x in reply if x.startswith(b"* SORT")]
    return [int(n) for n in line.split()[2:]]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (b"(ARRIVAL)", [2, 3, 1, 4]),
        (b"(REVERSE ARRIVAL)", [4, 1, 3, 2]),
        # 2's Date is 11:00 UTC; 3 has none: its internal date (Dec 2) stands in.
        (b"(DATE)", [3, 4, 1, 2]),
        (b"(SIZE)", [4, 3, 2, 1]),
        # Base subjects: Plan, plan, Äpfel (sorts by A), Zebra; ties keep mailbox order.
        (b"(SUBJECT)", [3, 1, 2, 4]),
        (b"(SUBJECT REVERSE DATE)", [3, 2, 1, 4]),
        (b"(FROM)", [2, 3, 1, 4]),
        (b"(DISPLAYFROM)", [2, 3, 1, 4]),  # alice@x.test, Bob, Carol, dave@x.test
        (b"(TO)", [3, 1, 2, 4]),  # alice, bob, carol, and the group's name "Group"
        (b"(CC)", [1, 3, 4, 2]),  # none, none, amy, zed
        (b"(REVERSE CC)", [2, 4, 1, 3]),
    ],
)
async def test_sort_keys(box: Env, criteria: bytes, expected: list[int]) -> None:
    c = await Client.selected(box, mailbox="Sort")
    assert await _sorted(c, b"SORT " + criteria + b" UTF-8 ALL") == expected
    await c.close()


async def test_sort_with_criteria_uid_and_expunged_messages(box: Env) -> None:
    c = await Client.selected(box, mailbox="Sort")
    assert await _sorted(c, b"SORT (SUBJECT) US-ASCII NOT FROM bob") == [1, 2, 4]
    assert await _sorted(c, b"SORT (ARRIVAL) UTF-8 2:3") == [2, 3]
    assert await c.cmd(b"e STORE 1 +FLAGS.SILENT (\\Deleted)") == [b"e OK STORE completed"]
    expunged = await c.cmd(b"e EXPUNGE")
    assert expunged[-1].startswith(b"e OK")
    # Sequence numbers follow the expunge; UID SORT answers UIDs.
    assert await _sorted(c, b"SORT (ARRIVAL) UTF-8 ALL") == [1, 2, 3]
    assert await _sorted(c, b"UID SORT (ARRIVAL) UTF-8 ALL") == [2, 3, 4]
    assert await _sorted(c, b"UID SORT (ARRIVAL) UTF-8 SUBJECT nothing-matches") == []
    await c.close()


async def test_thread_over_the_wire(box: Env) -> None:
    c = await Client.selected(box, mailbox="Sort")
    reply = await c.cmd(b"t THREAD REFERENCES UTF-8 ALL")
    # 1 <- 2 <- 4 by references; 3 alone. Roots by date: 3 (Dec 2, internal) before 1.
    assert reply == [b"* THREAD (3)(1 2 4)", b"t OK THREAD completed"]
    reply = await c.cmd(b"t UID THREAD ORDEREDSUBJECT UTF-8 ALL")
    # Threads by the date of their first message: Äpfel (Dec 2), Zebra (Dec 6), Plan (Dec 7).
    assert reply == [b"* THREAD (3)(4)(1 2)", b"t OK UID THREAD completed"]
    reply = await c.cmd(b"t THREAD REFERENCES UTF-8 NOT UID 2")
    # Only matching messages are threaded: without 2, whose References tied it to 1, 4 replies
    # to a message not there (a dummy, pruned) and stands alone.
    assert reply == [b"* THREAD (3)(4)(1)", b"t OK THREAD completed"]
    assert await c.cmd(b"t THREAD REFERENCES UTF-8 SUBJECT none") == [
        b"* THREAD",
        b"t OK THREAD completed",
    ]
    await c.close()


BAD = [
    b"s SORT",
    b"s SORT () UTF-8 ALL",
    b"s SORT (FOO) UTF-8 ALL",
    b"s SORT (REVERSE) UTF-8 ALL",
    b"s SORT (DATE)",
    b"s SORT (DATE) UTF-8",
    b"s SORT DATE UTF-8 ALL",
    b"s SORT (DATE) UTF-8 NOSUCHKEY",
    b"s SORT (" + b"DATE " * 20 + b"DATE) UTF-8 ALL",
    b"s THREAD",
    b"s THREAD FOO UTF-8 ALL",
    b"s THREAD REFERENCES UTF-8",
    b"s UID THREAD (REFERENCES) UTF-8 ALL",
]


async def test_bad_input_gets_bad_with_a_reason_and_the_session_goes_on(box: Env) -> None:
    c = await Client.selected(box, mailbox="Sort")
    for command in BAD:
        reply = await c.cmd(command)
        assert len(reply) == 1 and reply[0].startswith(b"s BAD "), (command, reply)
        assert len(reply[0]) > len(b"s BAD ") + 5, reply
        assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    reply = await c.cmd(b"s SORT (DATE) KOI8-R ALL")
    assert reply[0].startswith(b"s NO [BADCHARSET"), reply
    assert await _sorted(c, b"SORT (DATE) UTF-8 ALL") == [3, 4, 1, 2]
    await c.close()


async def test_state_rules_and_capability(box: Env) -> None:
    c = await Client.login(box)
    assert await c.cmd(b"a SORT (DATE) UTF-8 ALL") == [b"a BAD No mailbox selected"]
    assert await c.cmd(b"a THREAD REFERENCES UTF-8 ALL") == [b"a BAD No mailbox selected"]
    [caps, _] = await c.cmd(b"c CAPABILITY")
    for cap in (b" SORT ", b" SORT=DISPLAY ", b" THREAD=ORDEREDSUBJECT ", b" THREAD=REFERENCES"):
        assert cap in caps, caps
    await c.close()
    c = await Client.selected(box, "EXAMINE", "Sent")
    assert await c.cmd(b"a SORT (DATE) UTF-8 ALL") == [b"* SORT", b"a OK SORT completed"]
    await c.close()
