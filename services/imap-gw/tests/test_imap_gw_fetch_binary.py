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
        b"* 4 FETCH (UID 4 BINARY[1] {%d}\r\n%s FLAGS (\\Seen))" % (len(text), text),
        b"a OK FETCH completed",
    ]
    caps = (await c.cmd(b"c CAPABILITY"))[0].split()
    assert b"BINARY" in caps
    c.writer.close()
