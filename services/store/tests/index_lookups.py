"""For the tests of when the store parses content and when it looks a stored index up: a
message of a given size, and a count of look-ups and parses on a repository."""

from __future__ import annotations

import pytest

from postmesh.store import indexing
from postmesh.store.model import MessageIndex
from postmesh.store.sqlite import SqliteStoreRepository


def mail(subject: str, size: int) -> bytes:
    head = f"From: a@example.org\r\nSubject: {subject}\r\n\r\n".encode()
    line = b"some body text that fills the message up\r\n"
    return head + line * (size // len(line))


class Counted:
    """``looked_up``: the blob ids whose stored index ``repo`` asked for; ``parsed``: how many
    contents were parsed (in any repository of the process)."""

    def __init__(self, repo: SqliteStoreRepository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.looked_up: list[str] = []
        self.parsed = 0
        real_get, real_parse = repo._get_index, indexing.index_content

        async def get_index(blob_id: str) -> MessageIndex | None:
            self.looked_up.append(blob_id)
            return await real_get(blob_id)

        def parse(raw: bytes) -> MessageIndex:
            self.parsed += 1
            return real_parse(raw)

        monkeypatch.setattr(repo, "_get_index", get_index)
        monkeypatch.setattr(indexing, "index_content", parse)
