"""ESEARCH results over the wire: SEARCH RETURN (MIN MAX COUNT ALL SAVE) (RFC 4731 §3.1, RFC 5182
§2.4), the ``(TAG "x") UID`` form, ESEARCH by default under IMAP4rev2 (RFC 9051 §6.4.4, §7.3.4),
MODSEQ in results (RFC 7162 §3.1.5), and SEARCH through imaplib."""

from __future__ import annotations

import asyncio
import imaplib
from typing import TYPE_CHECKING

from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


async def _fill(env: Env) -> None:
    """INBOX (the seed): 1 \\Seen "first", 2 "second", 3 \\Flagged "third"; add 4-7, unseen.
    Message N has MODSEQ N + 1 (the store gave the new INBOX MODSEQ 1)."""
    for subject in ("fourth", "fifth", "sixth", "seventh"):
        await env.add(env.make_message(subject))


async def test_return_options(env: Env) -> None:
    await _fill(env)
    c = await Client.selected(env)
    assert await c.cmd(b"a SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "a") MIN 2 MAX 7 ALL 2,4:7 COUNT 5',
        b"a OK SEARCH completed",
    ]
    assert await c.cmd(b"b SEARCH RETURN (MIN) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "b") MIN 2',
        b"b OK SEARCH completed",
    ]
    assert await c.cmd(b"c SEARCH RETURN (MAX) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "c") MAX 7',
        b"c OK SEARCH completed",
    ]
    assert await c.cmd(b"d SEARCH RETURN (COUNT) ALL") == [
        b'* ESEARCH (TAG "d") COUNT 7',
        b"d OK SEARCH completed",
    ]
    # RETURN () is RETURN (ALL) (RFC 4731 §3.1); options in any case, repeated ones once.
    assert await c.cmd(b"e SEARCH RETURN () 1:3") == [
        b'* ESEARCH (TAG "e") ALL 1:3',
        b"e OK SEARCH completed",
    ]
    assert await c.cmd(b"f SEARCH RETURN (count Count) 1:3") == [
        b'* ESEARCH (TAG "f") COUNT 3',
        b"f OK SEARCH completed",
    ]
    # No match: no MIN/MAX/ALL, but COUNT 0 (RFC 4731 §3.1).
    assert await c.cmd(b"g SEARCH RETURN (MIN MAX ALL COUNT) DELETED") == [
        b'* ESEARCH (TAG "g") COUNT 0',
        b"g OK SEARCH completed",
    ]
    assert await c.cmd(b"h SEARCH RETURN (MIN ALL) DELETED") == [
        b'* ESEARCH (TAG "h")',
        b"h OK SEARCH completed",
    ]
    # RETURN with CHARSET after it.
    assert await c.cmd(b"i SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT fifth") == [
        b'* ESEARCH (TAG "i") ALL 5',
        b"i OK SEARCH completed",
    ]
    await c.close()


async def test_uid_esearch_after_expunge(env: Env) -> None:
    await _fill(env)
    c = await Client.selected(env)
    assert (await c.cmd(b"x STORE 2,4 +FLAGS.SILENT (\\Deleted)"))[-1].startswith(b"x OK")
    assert (await c.cmd(b"y EXPUNGE"))[:2] == [b"* 2 EXPUNGE", b"* 3 EXPUNGE"]
    # UIDs 1 3 5 6 7 are messages 1-5 now.
    assert await c.cmd(b"a UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "a") UID MIN 5 MAX 7 ALL 5:7 COUNT 3',
        b"a OK UID SEARCH completed",
    ]
    assert await c.cmd(b"b SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "b") MIN 3 MAX 5 ALL 3:5 COUNT 3',
        b"b OK SEARCH completed",
    ]
    assert await c.cmd(b"c UID SEARCH RETURN (ALL) ALL") == [
        b'* ESEARCH (TAG "c") UID ALL 1,3,5:7',
        b"c OK UID SEARCH completed",
    ]
    # The tag is sent back as a quoted string (tag-string, RFC 4731 §3.1), whatever it holds.
    assert await c.cmd(b"t.1] UID SEARCH RETURN (COUNT) ALL") == [
        b'* ESEARCH (TAG "t.1]") UID COUNT 5',
        b"t.1] OK UID SEARCH completed",
    ]
    await c.close()


async def test_save_result(env: Env) -> None:
    """RFC 5182 §2.4: SAVE alone answers no ESEARCH; with MIN/MAX only those are saved; with
    ALL or COUNT the whole result is."""
    await _fill(env)
    c = await Client.selected(env)
    assert await c.cmd(b"a SEARCH RETURN (SAVE) UNSEEN UNFLAGGED") == [b"a OK SEARCH completed"]
    assert await c.cmd(b"b SEARCH RETURN (ALL) $") == [
        b'* ESEARCH (TAG "b") ALL 2,4:7',
        b"b OK SEARCH completed",
    ]
    assert await c.cmd(b"c SEARCH RETURN (SAVE MIN MAX) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "c") MIN 2 MAX 7',
        b"c OK SEARCH completed",
    ]
    assert await c.cmd(b"d SEARCH RETURN (ALL) $") == [
        b'* ESEARCH (TAG "d") ALL 2,7',
        b"d OK SEARCH completed",
    ]
    assert await c.cmd(b"e SEARCH RETURN (SAVE MIN) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "e") MIN 2',
        b"e OK SEARCH completed",
    ]
    assert await c.cmd(b"f SEARCH RETURN (ALL) $") == [
        b'* ESEARCH (TAG "f") ALL 2',
        b"f OK SEARCH completed",
    ]
    assert await c.cmd(b"g SEARCH RETURN (SAVE COUNT MIN) UNSEEN UNFLAGGED") == [
        b'* ESEARCH (TAG "g") MIN 2 COUNT 5',
        b"g OK SEARCH completed",
    ]
    assert await c.cmd(b"h UID SEARCH RETURN (ALL) UID $") == [
        b'* ESEARCH (TAG "h") UID ALL 2,4:7',
        b"h OK UID SEARCH completed",
    ]
    # $ in the search that replaces it: the old value is read, then the new one saved.
    assert await c.cmd(b"i SEARCH RETURN (SAVE) $ 4:*") == [b"i OK SEARCH completed"]
    assert await c.cmd(b"j SEARCH RETURN (ALL) $") == [
        b'* ESEARCH (TAG "j") ALL 4:7',
        b"j OK SEARCH completed",
    ]
    # A SAVE that finds nothing saves the empty set.
    assert await c.cmd(b"k SEARCH RETURN (SAVE) DELETED") == [b"k OK SEARCH completed"]
    assert await c.cmd(b"l SEARCH RETURN (COUNT) $") == [
        b'* ESEARCH (TAG "l") COUNT 0',
        b"l OK SEARCH completed",
    ]
    # A failed SAVE search empties $ (RFC 5182 §2.1).
    assert await c.cmd(b"m SEARCH RETURN (SAVE) ALL") == [b"m OK SEARCH completed"]
    env.mail.down = True
    assert (await c.cmd(b"n SEARCH RETURN (SAVE) SEEN"))[-1].startswith(b"n NO [UNAVAILABLE]")
    env.mail.down = False
    assert await c.cmd(b"o SEARCH RETURN (COUNT) $") == [
        b'* ESEARCH (TAG "o") COUNT 0',
        b"o OK SEARCH completed",
    ]
    # So does one that is refused as BAD or NO by the parser.
    for failing, status in (
        (b"SEARCH RETURN (SAVE) FROBNICATE", b"BAD"),
        (b"SEARCH RETURN (SAVE ALL) CHARSET KOI8-R ALL", b"NO [BADCHARSET (UTF-8 US-ASCII)]"),
        (b"UID SEARCH RETURN (SAVE) UID 0", b"BAD"),
    ):
        assert await c.cmd(b"p SEARCH RETURN (SAVE) ALL") == [b"p OK SEARCH completed"]
        reply = await c.cmd(b"q " + failing)
        assert len(reply) == 1 and reply[0].startswith(b"q " + status), reply
        assert await c.cmd(b"r SEARCH RETURN (COUNT) $") == [
            b'* ESEARCH (TAG "r") COUNT 0',
            b"r OK SEARCH completed",
        ], failing
    # A failing search without SAVE leaves $ alone.
    assert await c.cmd(b"s SEARCH RETURN (SAVE) 1:2") == [b"s OK SEARCH completed"]
    assert (await c.cmd(b"t SEARCH FROBNICATE"))[0].startswith(b"t BAD")
    assert await c.cmd(b"u SEARCH RETURN (COUNT) $") == [
        b'* ESEARCH (TAG "u") COUNT 2',
        b"u OK SEARCH completed",
    ]
    await c.close()


async def test_imap4rev2_answers_esearch(env: Env) -> None:
    """Once IMAP4rev2 is enabled, SEARCH without RETURN is RETURN (ALL) (RFC 9051 §6.4.4)."""
    c = await Client.login(env)
    assert (await c.cmd(b"e ENABLE IMAP4rev2"))[-1].startswith(b"e OK")
    assert (await c.cmd(b"s SELECT INBOX"))[-1].startswith(b"s OK")
    assert await c.cmd(b"a SEARCH UNSEEN") == [
        b'* ESEARCH (TAG "a") ALL 2:3',
        b"a OK SEARCH completed",
    ]
    assert await c.cmd(b"b UID SEARCH DELETED") == [
        b'* ESEARCH (TAG "b") UID',
        b"b OK UID SEARCH completed",
    ]
    assert await c.cmd(b"c SEARCH RETURN (COUNT) ALL") == [
        b'* ESEARCH (TAG "c") COUNT 3',
        b"c OK SEARCH completed",
    ]
    await c.close()


async def test_modseq_in_esearch(env: Env) -> None:
    """RFC 7162 §3.1.5: MODSEQ in ESEARCH is the highest MODSEQ of the messages returned; with
    MIN/MAX alone, of just those. The MODSEQ key enables CONDSTORE (§3.1)."""
    await _fill(env)
    c = await Client.selected(env)
    assert await c.cmd(b"a SEARCH RETURN (ALL) MODSEQ 4") == [
        b'* ESEARCH (TAG "a") ALL 3:7 MODSEQ 8',
        b"a OK SEARCH completed",
    ]
    assert await c.cmd(b"b SEARCH RETURN (MIN) MODSEQ 4") == [
        b'* ESEARCH (TAG "b") MIN 3 MODSEQ 4',
        b"b OK SEARCH completed",
    ]
    assert await c.cmd(b"c UID SEARCH RETURN (MIN MAX) MODSEQ 4 NOT 7") == [
        b'* ESEARCH (TAG "c") UID MIN 3 MAX 6 MODSEQ 7',
        b"c OK UID SEARCH completed",
    ]
    assert await c.cmd(b"d SEARCH RETURN (COUNT) MODSEQ 100") == [
        b'* ESEARCH (TAG "d") COUNT 0',
        b"d OK SEARCH completed",
    ]
    # CONDSTORE is on now: a flag change made elsewhere is reported with its MODSEQ.
    await env.set_flags(1, ["\\Answered", "\\Seen"])
    assert await c.cmd(b"n NOOP") == [
        b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen) MODSEQ (9))",
        b"n OK NOOP completed",
    ]
    await c.close()


def _imaplib_search(env: Env) -> dict[str, object]:
    m = imaplib.IMAP4("127.0.0.1", env.port)
    with m:
        m.login(env.user, env.password)
        m.select("INBOX")
        out: dict[str, object] = {
            "unseen": m.search(None, "UNSEEN"),
            "subject": m.uid("SEARCH", "SUBJECT", '"fifth"'),
            "utf8": m.search("UTF-8", "BODY", "hello"),
            "or": m.search(None, "OR", "SEEN", "FLAGGED"),
        }
        out["badcharset"] = m.search("KOI8-R", "ALL")
        try:
            m.search(None, "FROBNICATE")
        except imaplib.IMAP4.error as e:
            out["bad"] = str(e)
        out["after"] = m.search(None, "ALL")
        return out


async def test_imaplib(env: Env) -> None:
    await _fill(env)
    out = await asyncio.to_thread(_imaplib_search, env)
    assert out["unseen"] == ("OK", [b"2 3 4 5 6 7"])
    assert out["subject"] == ("OK", [b"5"])
    assert out["utf8"] == ("OK", [b"1 3 4 5 6 7"])
    assert out["or"] == ("OK", [b"1 3"])
    assert out["badcharset"] == (
        "NO",
        [b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset 'KOI8-R'"],
    )
    assert "unknown search key" in str(out["bad"])
    assert out["after"] == ("OK", [b"1 2 3 4 5 6 7"])


async def test_saved_result_in_other_commands(env: Env) -> None:
    """RFC 5182 §2.1: ``$`` is a sequence set in FETCH, STORE and UID EXPUNGE (and their UID
    forms): message numbers in the plain forms, UIDs in the UID forms."""
    await _fill(env)
    c = await Client.selected(env)
    # Nothing saved yet: $ is empty, names no message, and is not an error.
    assert await c.cmd(b"a FETCH $ (FLAGS)") == [b"a OK FETCH completed"]
    assert await c.cmd(b"b SEARCH RETURN (SAVE) 2,4") == [b"b OK SEARCH completed"]
    assert await c.cmd(b"c FETCH $ (UID)") == [
        b"* 2 FETCH (UID 2)",
        b"* 4 FETCH (UID 4)",
        b"c OK FETCH completed",
    ]
    assert await c.cmd(b"d STORE $ +FLAGS (\\Deleted)") == [
        b"* 2 FETCH (FLAGS (\\Deleted))",
        b"* 4 FETCH (FLAGS (\\Deleted \\Recent))",  # 4-7 came after the seed: recent here
        b"d OK STORE completed",
    ]
    assert await c.cmd(b"e UID EXPUNGE $") == [
        b"* 2 EXPUNGE",
        b"* 3 EXPUNGE",
        b"e OK UID EXPUNGE completed",
    ]
    # UIDs 1 3 5 6 7 now; save UIDs 5 and 7, which are messages 3 and 5.
    assert await c.cmd(b"f UID SEARCH RETURN (SAVE) UID 5,7") == [b"f OK UID SEARCH completed"]
    assert await c.cmd(b"g FETCH $ (UID)") == [
        b"* 3 FETCH (UID 5)",
        b"* 5 FETCH (UID 7)",
        b"g OK FETCH completed",
    ]
    assert await c.cmd(b"h UID FETCH $ (FLAGS)") == [
        b"* 3 FETCH (UID 5 FLAGS (\\Recent))",
        b"* 5 FETCH (UID 7 FLAGS (\\Recent))",
        b"h OK FETCH completed",
    ]
    assert await c.cmd(b"i UID STORE $ +FLAGS.SILENT (\\Seen)") == [b"i OK STORE completed"]
    assert await c.cmd(b"j SEARCH UNSEEN") == [b"* SEARCH 2 4", b"j OK SEARCH completed"]
    for bad in (b"k FETCH $,1 (UID)", b"k STORE 1:$ +FLAGS (\\Seen)", b"k UID EXPUNGE $:*"):
        reply = await c.cmd(bad)
        assert len(reply) == 1 and reply[0].startswith(b"k BAD "), (bad, reply)
    await c.close()
