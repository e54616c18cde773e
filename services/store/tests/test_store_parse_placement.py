"""Where Deliver and Append parse a content (ADR 0054): up to PARSE_ON_LOOP on the event loop
(a hand-off to a worker thread costs more than the parse), larger ones in a worker thread. The
index is the same either way."""

from __future__ import annotations

import threading

import pytest

from postmesh.store import indexing, repository
from postmesh.store.model import MessageIndex


def _message(size: int) -> bytes:
    head = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: placement\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


async def test_small_content_is_parsed_on_the_loop_and_large_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = indexing.index_content
    threads: list[int] = []

    def recorded(raw: bytes) -> MessageIndex:
        threads.append(threading.get_ident())
        return parse(raw)

    monkeypatch.setattr(indexing, "index_content", recorded)
    small = _message(repository.PARSE_ON_LOOP)
    large = _message(repository.PARSE_ON_LOOP * 4)
    assert len(small) <= repository.PARSE_ON_LOOP < len(large)

    small_index = await repository._parse(small)
    large_index = await repository._parse(large)

    loop_thread = threading.get_ident()
    assert threads == [loop_thread, threads[1]]
    assert threads[1] != loop_thread
    assert small_index == parse(small)
    assert large_index == parse(large)
