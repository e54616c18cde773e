"""FETCH BODY[section]<partial> over the wire (RFC 9051 §6.4.5): MIME part numbers, HEADER,
HEADER.FIELDS(.NOT), MIME and TEXT of parts and of an encapsulated message/rfc822, partial
ranges, the \\Seen side effect, and bad section syntax answered BAD with the session going on."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from fetch_messages import MIXED
from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


INNER_HEADER = (
    b"From: Inner <inner@example.net>\r\nSubject: inner\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
)
INNER_TEXT = (
    b"--inner\r\nContent-Type: text/plain\r\n\r\nplain text\r\n--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>html</p>\r\n--inner--"
)
TOP_HEADER = MIXED[: MIXED.index(b"\r\n\r\n") + 4]


@pytest.mark.parametrize(
    ("section", "data"),
    [
        (b"1", b"Caf=E9 cr=E8me, a long line that is soft=\r\n broken."),
        (
            b"1.MIME",
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
        ),
        (b"3", INNER_HEADER + INNER_TEXT),  # the whole encapsulated message
        (b"3.HEADER", INNER_HEADER),
        (b"3.TEXT", INNER_TEXT),
        (b"3.1", b"plain text"),
        (b"3.2", b"<p>html</p>"),
        (b"3.2.MIME", b"Content-Type: text/html; charset=utf-8\r\n\r\n"),
        (b"3.HEADER.FIELDS (SUBJECT)", b"Subject: inner\r\n\r\n"),
        (b"3.HEADER.FIELDS.NOT (From Content-Type)", b"Subject: inner\r\n\r\n"),
        (b"4", b"begin 644 x"),
        (b"HEADER", TOP_HEADER),
        (b"TEXT", MIXED[len(TOP_HEADER) :]),
        (b"", MIXED),
    ],
)
async def test_part_sections(env: Env, section: bytes, data: bytes) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    reply = await c.cmd_literals(b"a UID FETCH %d (BODY.PEEK[%s])" % (uid, section))
    name = section.split(b" (")[0].upper()
    if b"(" in section:
        name += b" (" + section.split(b" (")[1]
    assert reply == [
        b"* 4 FETCH (UID 4 BODY[%s] %s)" % (name, lit(data)),
        b"a OK FETCH completed",
    ]
    c.writer.close()


async def test_missing_parts_are_nil(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    # Part 5 does not exist; a text/plain part has no part 2 and no HEADER of its own (only
    # message/rfc822 parts do, RFC 9051 §6.4.5).
    assert await c.cmd(
        b"a UID FETCH %d (BODY.PEEK[5] BODY.PEEK[1.2] BODY.PEEK[1.HEADER])" % uid
    ) == [
        b"* 4 FETCH (UID 4 BODY[5] NIL BODY[1.2] NIL BODY[1.HEADER] NIL)",
        b"a OK FETCH completed",
    ]
    c.writer.close()


async def test_part_one_of_a_single_part_is_that_part(env: Env) -> None:
    """RFC 9051 §6.4.5: a non-multipart body has only a part 1, itself; below part 2 (an
    attachment) as at the top (UW-IMAP and Dovecot answer so)."""
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    one = await c.cmd_literals(b"a UID FETCH %d (BODY.PEEK[2])" % uid)
    again = await c.cmd_literals(b"b UID FETCH %d (BODY.PEEK[2.1] BODY.PEEK[2.1.1])" % uid)
    part = one[0].removeprefix(b"* 4 FETCH (UID 4 BODY[2] ").removesuffix(b")")
    assert part.startswith(b"{") and len(part) > 500
    assert again == [
        b"* 4 FETCH (UID 4 BODY[2.1] " + part + b" BODY[2.1.1] " + part + b")",
        b"b OK FETCH completed",
    ]
    c.writer.close()


async def test_single_part_message_part_one_is_its_body(env: Env) -> None:
    c = await Client.selected(env)
    assert await c.cmd_literals(b"a FETCH 2 (BODY.PEEK[1] BODY.PEEK[1.MIME])") == [
        b"* 2 FETCH (BODY[1] "
        + lit(b"Line one.\r\nLine two.\r\n")
        + b" BODY[1.MIME] "
        + lit((await env.content(2)).split(b"\r\n\r\n")[0] + b"\r\n\r\n")
        + b")",
        b"a OK FETCH completed",
    ]
    c.writer.close()


async def test_header_sections_come_from_metadata(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    env.mail.calls.clear()
    reply = await c.cmd_literals(
        b"a UID FETCH %d (BODY.PEEK[HEADER.FIELDS (Subject Message-ID)] RFC822.HEADER "
        b"BODY.PEEK[HEADER.FIELDS.NOT (Received)])" % uid
    )
    fields = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a report\r\n"
        b"Message-ID: <B27397-0100000@example.com>\r\n\r\n"
    )
    assert reply == [
        b"* 4 FETCH (UID 4 BODY[HEADER.FIELDS (Subject Message-ID)] "
        + lit(fields)
        + b" RFC822.HEADER "
        + lit(TOP_HEADER)
        + b" BODY[HEADER.FIELDS.NOT (Received)] "
        + lit(TOP_HEADER)
        + b")",
        b"a OK FETCH completed",
    ]
    assert [c[0] for c in env.mail.calls] == ["get_structure"]
    c.writer.close()


async def test_partial_ranges(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    reply = await c.cmd_literals(
        b"a UID FETCH %d (BODY.PEEK[3.1]<6.100> BODY.PEEK[3.1]<500.10> BODY.PEEK[]<0.5>)" % uid
    )
    # The origin is echoed; a range past the end is cut, an origin past it gives "".
    assert reply == [
        b"* 4 FETCH (UID 4 BODY[3.1]<6> {4}\r\ntext BODY[3.1]<500> {0}\r\n BODY[]<0> {5}\r\nFrom:)",
        b"a OK FETCH completed",
    ]
    c.writer.close()


async def test_body_fetch_sets_seen_once(env: Env) -> None:
    c = await Client.selected(env)
    # Message 2 is unseen: BODY[TEXT] sets \Seen and the FETCH says so (RFC 9051 §6.4.5).
    assert await c.cmd_literals(b"a FETCH 2 (BODY[TEXT])") == [
        b"* 2 FETCH (BODY[TEXT] " + lit(b"Line one.\r\nLine two.\r\n") + b" FLAGS (\\Seen))",
        b"a OK FETCH completed",
    ]
    assert "\\Seen" in (await env.flags(2))
    # Already seen: no FLAGS, and the store is not asked to change anything.
    env.mail.calls.clear()
    assert (await c.cmd_literals(b"b FETCH 2 (BODY[HEADER.FIELDS (Subject)])"))[0] == (
        b"* 2 FETCH (BODY[HEADER.FIELDS (Subject)] " + lit(b"Subject: second\r\n\r\n") + b")"
    )
    assert "store_flags" not in [c[0] for c in env.mail.calls]
    # No unsolicited FETCH left over for it: the client was told.
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_seen_follows_changes_made_elsewhere(env: Env) -> None:
    c = await Client.selected(env)
    await env.set_flags(1, [])  # another session took \Seen off message 1; its event arrives
    await asyncio.sleep(0)
    reply = await c.cmd_literals(b"a FETCH 1 (BODY[TEXT])")
    assert reply[0] == b"* 1 FETCH (BODY[TEXT] " + lit(b"Hello.\r\n") + b" FLAGS (\\Seen))"
    assert (await env.flags(1)) == ("\\Seen",)
    # Expunged in the store meanwhile: the \Seen update does not find it.
    await env.expunge_elsewhere([2], event=False)
    assert await c.cmd(b"b FETCH 2 (BODY[])") == [
        b"b NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    ]
    c.writer.close()


async def test_seen_with_condstore_reports_modseq(env: Env) -> None:
    c = await Client.login(env)
    await c.cmd(b"s SELECT INBOX (CONDSTORE)")
    reply = await c.cmd_literals(b"a UID FETCH 2 (RFC822.TEXT)")
    assert reply[0] == (
        b"* 2 FETCH (UID 2 RFC822.TEXT "
        + lit(b"Line one.\r\nLine two.\r\n")
        + b" FLAGS (\\Seen) MODSEQ (5))"  # the seed's highest is 4
    )
    c.writer.close()


async def test_examine_leaves_flags_alone(env: Env) -> None:
    c = await Client.selected(env, "EXAMINE")
    env.mail.calls.clear()
    assert await c.cmd_literals(b"a FETCH 2 (BODY[1] RFC822)") == [
        b"* 2 FETCH (BODY[1] "
        + lit(b"Line one.\r\nLine two.\r\n")
        + b" RFC822 "
        + lit(await env.content(2))
        + b")",
        b"a OK FETCH completed",
    ]
    assert "store_flags" not in [c[0] for c in env.mail.calls]
    assert "\\Seen" not in (await env.flags(2))
    c.writer.close()


async def test_peek_of_whole_message_asks_only_for_content(env: Env) -> None:
    c = await Client.selected(env)
    env.mail.calls.clear()
    reply = await c.cmd_literals(b"a UID FETCH 1 (BODY.PEEK[])")
    assert reply == [
        b"* 1 FETCH (UID 1 BODY[] " + lit(await env.content(1)) + b")",
        b"a OK FETCH completed",
    ]
    assert env.mail.calls == [("get_content", (env.user, "INBOX", 1))]
    # Expunged meanwhile: left out (UID FETCH), or NO [EXPUNGEISSUED] (FETCH).
    await env.expunge_elsewhere([1], event=False)
    assert await c.cmd(b"b UID FETCH 1 (BODY.PEEK[])") == [b"b OK FETCH completed"]
    assert await c.cmd(b"c FETCH 1 (BODY.PEEK[])") == [
        b"c NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    ]
    c.writer.close()


async def test_fetch_saved_search_result(env: Env) -> None:
    c = await Client.selected(env)
    # RFC 5182 §2.1: before any SEARCH ... SAVE, $ is empty: no message, not an error.
    assert await c.cmd(b"a FETCH $ (UID)") == [b"a OK FETCH completed"]
    assert await c.cmd(b"b UID FETCH $ (FLAGS)") == [b"b OK FETCH completed"]
    assert (await c.cmd(b"c FETCH $,1 (UID)"))[0].startswith(b"c BAD ")
    c.writer.close()


@pytest.mark.parametrize(
    "atts",
    [
        b"BODY[0]",
        b"BODY[1.0]",
        b"BODY[4294967296]",
        b"BODY[1.HEADER.FIELDS]",  # no field list
        b"BODY[HEADER.FIELDS ()]",  # an empty one
        b"BODY[HEADER.FIELDS (Subject]",
        b"BINARY[1.HEADER]",  # BINARY takes part numbers only (RFC 3516)
        b"BINARY.SIZE[TEXT]",
        b"BODY[]<5.>",
        b"BODY[]<5>",
        b"BODY[]<.5>",
        b"BODY[]<0.0>",
        b"BODY[MIME]",
        b"BODY[1.MIME.TEXT]",
        b"BODY[TEXT",
        b"BODY[1.]",
        b"BODY.PEEK",
        b"BINARY.PEEK",
        b"(BODY[] FROB)",
        b"(UID) (CHANGEDSINCE x)",
        b"(UID) (FROB 1)",
        b"(UID) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        b"(UID) (CHANGEDSINCE 1) extra",
    ],
)
async def test_bad_sections_get_bad_and_session_goes_on(env: Env, atts: bytes) -> None:
    c = await Client.selected(env)
    reply = await c.cmd(b"a FETCH 1 " + atts)
    assert len(reply) == 1 and reply[0].startswith(b"a BAD "), (atts, reply)
    assert await c.cmd(b"b FETCH 1 (UID)") == [b"* 1 FETCH (UID 1)", b"b OK FETCH completed"]
    c.writer.close()
