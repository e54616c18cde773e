"""FETCH of several messages' contents (ADR 82): runs of them come in one store stream
(GetMessageContents) in the order they are rendered, a large or unlisted one alone; the
responses are those of one call per message, an expunged message included."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from imap_wire import Client

from postmesh.imap_gw import fetch_contents
from postmesh.imap_gw.fetch_contents import runs

if TYPE_CHECKING:
    from store_env import StoreEnv as Env


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_runs_cut_by_octets_with_large_and_unknown_messages_alone() -> None:
    sizes = {1: 40, 2: 40, 3: 30, 4: 500, 5: 10, 7: 60, 8: 50}
    assert runs([1, 2, 3, 4, 5, 6, 7, 8], sizes, 100) == [[1, 2], [3], [4], [5], [6], [7], [8]]
    assert runs([5, 3, 1], sizes, 100) == [[5, 3, 1]]
    assert runs([], sizes, 100) == []
    assert runs([1, 2], sizes, 80) == [[1, 2]]  # exactly the budget: one run


async def _store_calls(env: Env) -> list[str]:
    return [name for name, _ in env.mail.calls if name in ("get_content", "read_contents")]


async def test_bodies_of_several_messages_in_one_store_stream(env: Env) -> None:
    for n in range(4, 9):
        await env.add(env.make_message(f"message {n}", f"Body {n}.\r\n" * n))
    c = await Client.selected(env)
    env.mail.calls.clear()
    reply = await c.cmd_literals(b"a UID FETCH 2:7 (RFC822.SIZE BODY.PEEK[])")
    assert len(reply) == 7 and reply[-1] == b"a OK FETCH completed"
    for uid, line in zip(range(2, 8), reply, strict=False):
        content = await env.content(uid)
        assert line == b"* %d FETCH (UID %d RFC822.SIZE %d BODY[] %s)" % (
            uid, uid, len(content), lit(content),
        )  # fmt: skip
    assert await _store_calls(env) == ["read_contents"]
    # No size asked for: the FETCH lists the messages for them, and still one stream.
    env.mail.calls.clear()
    reply = await c.cmd_literals(b"b FETCH 1:* (BODY.PEEK[TEXT])")
    assert len(reply) == 9 and reply[-1] == b"b OK FETCH completed"
    assert reply[7] == b"* 8 FETCH (BODY[TEXT] " + lit(b"Body 8.\r\n" * 8) + b")"
    assert await _store_calls(env) == ["read_contents"]
    c.writer.close()


async def test_a_message_expunged_meanwhile_and_runs_by_size(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages above the read-ahead budget are read alone; one expunged in the store (the
    session not told yet) is left out of the answer, which says so (RFC 9051 §7.1)."""
    big = env.make_message("big", "x" * 3000 + "\r\n")
    for n in range(4, 9):
        await env.add(big if n == 6 else env.make_message(f"m{n}"))
    monkeypatch.setattr(fetch_contents, "READ_AHEAD_OCTETS", 1000)
    c = await Client.selected(env)
    await env.expunge_elsewhere([3], event=False)
    env.mail.calls.clear()
    reply = await c.cmd_literals(b"a FETCH 1:8 (BODY.PEEK[])")
    assert [line.split(b"BODY[]")[0] for line in reply[:-1]] == [
        b"* %d FETCH (" % n for n in (1, 2, 4, 5, 6, 7, 8)
    ]
    assert reply[4] == b"* 6 FETCH (BODY[] " + lit(big) + b")"
    assert reply[-1] == b"a NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
    # 1-2 in a stream, 3 (not listed: gone) alone, 4-5 in a stream, 6 (too big) alone, 7-8.
    assert await _store_calls(env) == [
        "read_contents", "get_content", "read_contents", "get_content", "read_contents",
    ]  # fmt: skip
    c.writer.close()
