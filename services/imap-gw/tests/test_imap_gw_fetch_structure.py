"""FETCH ENVELOPE, BODYSTRUCTURE and BODY over the wire (RFC 9051 §6.4.5, §7.5.2): built from
the metadata the store parses at delivery, never from a content download."""

from __future__ import annotations

import asyncio
import imaplib
from typing import TYPE_CHECKING

from fetch_messages import EIGHT_BIT, MIXED
from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

ANDRE = b'("=?utf-8?b?QW5kcsOpIFBpcmFyZA==?=" NIL "PIRARD" "vm1.ulg.ac.be")'
INNER = b'("Inner" NIL "inner" "example.net")'
MIXED_ENVELOPE = (
    b'("Mon, 7 Feb 1994 21:52:25 -0800" "=?utf-8?q?Gr=C3=BC=C3=9Fe?= and a report" '
    b"(" + ANDRE + b") (" + ANDRE + b") (" + ANDRE + b") "
    b'(("Keld" NIL "keld" "dkuug.dk")(NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
    b'(("Joe Q. Public" NIL "john.q.public" "example.com")) NIL '
    b'"<earlier@example.com>" "<B27397-0100000@example.com>")'
)
INNER_ENVELOPE = (
    b'(NIL "inner" (' + INNER + b") (" + INNER + b") (" + INNER + b") NIL NIL NIL NIL NIL)"
)
# Line counts are line ends (as UW-IMAP and Dovecot count): each part's last line ends with
# the CRLF that belongs to the next boundary (RFC 2046 §5.1.1), so it does not count.
MIXED_BODYSTRUCTURE = (
    b'(("TEXT" "PLAIN" ("CHARSET" "iso-8859-1") NIL NIL "QUOTED-PRINTABLE" 51 1 NIL NIL NIL NIL)'
    b'("APPLICATION" "OCTET-STREAM" ("NAME" "data.bin") "<part2@example.com>" "some bytes" '
    b'"BASE64" 700 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "data.bin")) '
    b'("en" "de") "http://example.com/data.bin")'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 228 ' + INNER_ENVELOPE + b" "
    b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 0 NIL NIL NIL NIL)'
    b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 0 NIL NIL NIL NIL) '
    b'"ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL) 12 NIL NIL NIL NIL)'
    b'("TEXT" "PLAIN" ("CHARSET" "x-unknown") NIL NIL "X-UUENCODE" 11 0 NIL NIL NIL NIL) '
    b'"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)'
)
MIXED_BODY = (
    b'(("TEXT" "PLAIN" ("CHARSET" "iso-8859-1") NIL NIL "QUOTED-PRINTABLE" 51 1)'
    b'("APPLICATION" "OCTET-STREAM" ("NAME" "data.bin") "<part2@example.com>" "some bytes" '
    b'"BASE64" 700)'
    b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 228 ' + INNER_ENVELOPE + b" "
    b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 0)'
    b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 0) "ALTERNATIVE") 12)'
    b'("TEXT" "PLAIN" ("CHARSET" "x-unknown") NIL NIL "X-UUENCODE" 11 0) "MIXED")'
)


def _content_calls(env: Env) -> list[object]:
    return [c for c in env.mail.calls if c[0] == "get_content"]


async def test_envelope_bodystructure_body_of_multipart(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    env.mail.calls.clear()
    reply = await c.cmd(b"a UID FETCH %d (ENVELOPE BODYSTRUCTURE BODY)" % uid)
    assert reply == [
        b"* 4 FETCH (UID 4 ENVELOPE "
        + MIXED_ENVELOPE
        + b" BODYSTRUCTURE "
        + MIXED_BODYSTRUCTURE
        + b" BODY "
        + MIXED_BODY
        + b")",
        b"a OK FETCH completed",
    ]
    # From the metadata alone, in one GetMessageMeta; nothing downloaded, no flags changed.
    assert _content_calls(env) == []
    assert [c[0] for c in env.mail.calls] == ["get_structure"]
    c.writer.close()


async def test_simple_message_and_macros(env: Env) -> None:
    c = await Client.selected(env)
    first = b'(NIL "first" (("Bob" NIL "bob" "example.com")) (("Bob" NIL "bob" "example.com")) '
    first += b'(("Bob" NIL "bob" "example.com")) ((NIL NIL "alice" "example.org")) NIL NIL NIL '
    first += b'"<first@example.com>")'
    assert await c.cmd(b"a FETCH 1 FULL") == [
        b'* 1 FETCH (FLAGS (\\Seen) INTERNALDATE "14-Nov-2023 22:13:20 +0000" RFC822.SIZE 152 '
        b"ENVELOPE " + first + b' BODY ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 8 1))',
        b"a OK FETCH completed",
    ]
    reply = await c.cmd(b"b FETCH 1 ALL")
    assert reply[0].endswith(b"RFC822.SIZE 152 ENVELOPE " + first + b")")
    assert await c.cmd(b"c FETCH 1 BODYSTRUCTURE") == [
        b'* 1 FETCH (BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 8 1 '
        b"NIL NIL NIL NIL))",
        b"c OK FETCH completed",
    ]
    c.writer.close()


async def test_eight_bit_header_goes_out_as_literal(env: Env) -> None:
    uid = await env.add(EIGHT_BIT)
    c = await Client.selected(env)
    subject = "Grüße aus Köln".encode()
    jm = b'("=?utf-8?b?SsO8cmdlbiBNw7xsbGVy?=" NIL "jm" "example.de")'
    assert await c.cmd_literals(b"a UID FETCH %d (ENVELOPE)" % uid) == [
        b"* 4 FETCH (UID 4 ENVELOPE (NIL {%d}\r\n" % len(subject)
        + subject
        + b" ("
        + jm
        + b") ("
        + jm
        + b") ("
        + jm
        + b") "
        b'((NIL NIL "alice" "example.org")) NIL NIL NIL NIL))',
        b"a OK FETCH completed",
    ]
    c.writer.close()
    # Once the client accepts UTF-8 (RFC 6855), the display name goes out as UTF-8.
    c = await Client.login(env)
    assert (await c.cmd(b"e ENABLE UTF8=ACCEPT"))[-1] == b"e OK ENABLE completed"
    await c.cmd(b"s SELECT INBOX")
    reply = await c.cmd_literals(b"b UID FETCH %d (ENVELOPE)" % uid)
    name = "Jürgen Müller".encode()
    assert b'(({%d}\r\n%s NIL "jm" "example.de"))' % (len(name), name) in reply[0]
    c.writer.close()


async def test_structure_of_expunged_message_is_left_out(env: Env) -> None:
    c = await Client.selected(env)
    await env.expunge_elsewhere(
        [2], event=False
    )  # gone from the store; the client still has it as message 2
    reply = await c.cmd(b"a FETCH 1:3 (ENVELOPE)")
    assert [r[:12] for r in reply[:-1]] == [b"* 1 FETCH (E", b"* 3 FETCH (E"]
    assert reply[-1] == b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    assert (await c.cmd(b"b NOOP"))[0] == b"* 2 EXPUNGE"
    c.writer.close()


async def test_imaplib_reads_bodystructure(env: Env) -> None:
    await env.add(MIXED)

    def run() -> list[bytes]:
        m = imaplib.IMAP4("127.0.0.1", env.port)
        m.login(env.user, env.password)
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("4", "(BODYSTRUCTURE ENVELOPE)")
        assert typ == "OK"
        m.logout()
        return [d for d in data if isinstance(d, bytes)]

    data = await asyncio.to_thread(run)
    assert data[0].startswith(b"4 (BODYSTRUCTURE " + MIXED_BODYSTRUCTURE + b" ENVELOPE ")
