"""FETCH BINARY[section]<partial> and BINARY.SIZE (RFC 3516, RFC 9051 §6.4.5): the content
transfer decoding of base64 and quoted-printable parts, literal8 for data with NUL octets,
NO [UNKNOWN-CTE] for an encoding the server cannot decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fetch_messages import ATTACHMENT, EIGHT_BIT, MIXED
from imap_wire import Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

QP_DECODED = b"Caf\xe9 cr\xe8me, a long line that is soft broken."


async def test_binary_decodes_base64_and_qp(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    reply = await c.cmd_literals(
        b"a UID FETCH %d (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.PEEK[2]<254.4> BINARY.PEEK[5])" % uid
    )
    assert reply == [
        b"* 4 FETCH (UID 4 BINARY[1] {%d}\r\n%s BINARY[2] ~{512}\r\n%s "
        b"BINARY[2]<254> ~{4}\r\n\xfe\xff\x00\x01 BINARY[5] NIL)"
        % (len(QP_DECODED), QP_DECODED, ATTACHMENT),
        b"a OK FETCH completed",
    ]
    c.writer.close()


async def test_binary_size(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    env.mail.calls.clear()
    # Identity-encoded parts: the size is in the metadata, nothing is downloaded.
    assert await c.cmd(b"a UID FETCH %d (BINARY.SIZE[3.1] BINARY.SIZE[3])" % uid) == [
        b"* 4 FETCH (UID 4 BINARY.SIZE[3.1] 10 BINARY.SIZE[3] 228)",
        b"a OK FETCH completed",
    ]
    assert "get_content" not in [c[0] for c in env.mail.calls]
    assert await c.cmd(b"b UID FETCH %d (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.SIZE[9])" % uid) == [
        b"* 4 FETCH (UID 4 BINARY.SIZE[1] %d BINARY.SIZE[2] 512 BINARY.SIZE[9] NIL)"
        % len(QP_DECODED),
        b"b OK FETCH completed",
    ]
    c.writer.close()


async def test_unknown_cte(env: Env) -> None:
    uid = await env.add(MIXED)
    c = await Client.selected(env)
    for item in (b"BINARY.PEEK[4]", b"BINARY.SIZE[4]"):
        assert await c.cmd(b"a UID FETCH %d (%s)" % (uid, item)) == [
            b"a NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding, cannot decode"
        ]
    # The raw part is still there as BODY[4], and the session goes on.
    assert (await c.cmd_literals(b"b UID FETCH %d (BODY.PEEK[4])" % uid))[-1] == (
        b"b OK FETCH completed"
    )
    c.writer.close()


async def test_binary_of_single_part_message_sets_seen(env: Env) -> None:
    uid = await env.add(EIGHT_BIT)
    c = await Client.selected(env)
    text = "Hallo Welt, schöne Grüße!\n".encode()
    assert await c.cmd_literals(b"a UID FETCH %d (BINARY[1])" % uid) == [
        b"* 4 FETCH (UID 4 BINARY[1] {%d}\r\n%s FLAGS (\\Seen \\Recent))" % (len(text), text),
        b"a OK FETCH completed",
    ]
    caps = (await c.cmd(b"c CAPABILITY"))[0].split()
    assert b"BINARY" in caps
    c.writer.close()


# BINARYMIME mail (RFC 3030, ADR 40): a binary part with NUL, bare CR and LF, stored as sent.
RAW_PART = b"\x00\x01\r\x02\n.\r\n\xff\x00end"
BINARYMIME = (
    b"Subject: binary\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n" + RAW_PART + b"\r\n--b1--\r\n"
)


async def test_binary_content_is_served_exactly_by_binary_and_without_nul_by_body(
    env: Env,
) -> None:
    """BINARY gives the octets (literal8, RFC 3516 §4.3); BODY[] cannot carry NUL in a literal
    (RFC 9051 CHAR8), so there each NUL is 0x80 and every other octet is as stored."""
    uid = await env.add(BINARYMIME)
    c = await Client.selected(env)
    no_nul = BINARYMIME.replace(b"\x00", b"\x80")
    reply = await c.cmd_literals(
        b"a UID FETCH %d (BINARY.PEEK[2] BINARY.PEEK[] BODY.PEEK[2] BODY.PEEK[] BINARY.SIZE[2])"
        % uid
    )
    values = (
        len(RAW_PART), RAW_PART, len(BINARYMIME), BINARYMIME,
        len(RAW_PART), RAW_PART.replace(b"\x00", b"\x80"), len(no_nul), no_nul,
        len(RAW_PART),
    )  # fmt: skip
    assert reply == [
        b"* 4 FETCH (UID 4 BINARY[2] ~{%d}\r\n%s BINARY[] ~{%d}\r\n%s "
        b"BODY[2] {%d}\r\n%s BODY[] {%d}\r\n%s BINARY.SIZE[2] %d)" % values,
        b"a OK FETCH completed",
    ]
    structure = await c.cmd(b"b UID FETCH %d (BODYSTRUCTURE)" % uid)
    assert b'"APPLICATION" "OCTET-STREAM" NIL NIL NIL "BINARY" %d' % len(RAW_PART) in structure[0]
    c.writer.close()
