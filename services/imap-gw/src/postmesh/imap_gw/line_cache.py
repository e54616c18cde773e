"""Rendered FETCH response lines of the selected mailbox, kept between commands.

A client without CONDSTORE keeps in step with ``FETCH 1:* (FLAGS)`` (or ``UID FETCH 1:* (UID
FLAGS)``): every poll renders a line per message, ~1.7 ms of formatting for 10,000 messages,
though usually almost nothing changed since the last one. The model (``state.py``) keeps the
lines of one item list here, in chunks of :data:`CHUNK` messages, one bytes object each (about
the response's own size, ~40 octets a message), and drops a chunk when a message in it
changes; a poll then joins the cached chunks and renders only the changed ones.

Lines carry sequence numbers, so removing a message drops every chunk from its own on.
"""

from __future__ import annotations

from collections.abc import Callable

CHUNK = 256


class LineCache:
    __slots__ = ("_chunks", "key")

    def __init__(self) -> None:
        # What the lines show (the response's item format); chunks of another key are dropped.
        self.key: bytes | None = None
        self._chunks: list[bytes | None] = []

    def clear(self) -> None:
        """Forget every line: the session will not poll soon (IDLE), and an idle session must
        stay small (issue 7: ~40 KiB), not hold a response per mailbox."""
        self.key, self._chunks = None, []

    def changed(self, index: int) -> None:
        """The message at ``index`` (0-based) changed, or was added there."""
        c = index // CHUNK
        if c < len(self._chunks):
            self._chunks[c] = None

    def renumbered(self, index: int) -> None:
        """Messages from ``index`` on were removed or renumbered."""
        del self._chunks[index // CHUNK :]

    def lines(
        self, key: bytes, lo: int, hi: int, count: int, render: Callable[[int, int], bytes]
    ) -> list[bytes]:
        """The lines of messages ``lo`` to ``hi - 1`` (0-based) of ``count``: whole chunks from
        the cache (rendered and kept if missing), the partial ones at the edges rendered.
        ``render(i, j)`` renders messages i to j - 1 as of now."""
        if key != self.key:
            self.key, self._chunks = key, []
        chunks = self._chunks
        out: list[bytes] = []
        i = lo
        while i < hi:
            c = i // CHUNK
            start, end = c * CHUNK, min((c + 1) * CHUNK, count)
            if i != start or end > hi:
                out.append(render(i, min(end, hi)))  # an edge: not cached
                i = min(end, hi)
                continue
            if c >= len(chunks):
                chunks.extend([None] * (c + 1 - len(chunks)))
            data = chunks[c]
            if data is None:
                data = chunks[c] = render(start, end)
            out.append(data)
            i = end
        return out
