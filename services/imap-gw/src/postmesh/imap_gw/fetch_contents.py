"""The contents a FETCH of several messages renders, read ahead in store streams (ADR 0082).

FETCH renders one message after the other. Asked one store call each (GetSmallMessageContent),
every message cost a round trip to the store before its response could be written: a client
syncing a folder's bodies (``UID FETCH 1:50 (RFC822.SIZE BODY.PEEK[])``) waited fifty of them.
With the messages' sizes known (RFC822.SIZE, from the listing), runs of consecutive messages of
at most ``READ_AHEAD_OCTETS`` together come in one GetMessageContents stream instead, in the
order they are rendered: the SQLite store reads them in groups on its thread, the MongoDB store
several at once (ADR 0081). A message larger than that, or one whose size is not known, is read
alone as before. So a session holds at most about ``READ_AHEAD_OCTETS`` of contents besides
the message it renders.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing

from postmesh.imap_gw.backend import MailStore, MessageNotFound

READ_AHEAD_OCTETS = 1 << 20


def runs(uids: Sequence[int], sizes: Mapping[int, int], budget: int) -> list[list[int]]:
    """``uids`` in order, cut into runs of at most ``budget`` octets; a message of unknown size
    or larger than the budget is a run of its own."""
    out: list[list[int]] = []
    run: list[int] = []
    octets = 0
    for uid in uids:
        size = sizes.get(uid)
        if size is None or size > budget:
            if run:
                out.append(run)
            out.append([uid])
            run, octets = [], 0
            continue
        if run and octets + size > budget:
            out.append(run)
            run, octets = [], 0
        run.append(uid)
        octets += size
    if run:
        out.append(run)
    return out


class ContentReader:
    """``get`` must be called for ``uids`` in their order (FETCH's rendering loop); ``aclose``
    when done, early or not (it ends a stream still open)."""

    def __init__(
        self,
        store: MailStore,
        user: str,
        mailbox: str,
        uids: Sequence[int],
        sizes: Mapping[int, int],
    ) -> None:
        self._store, self._user, self._mailbox = store, user, mailbox
        self._contents = self._read(runs(uids, sizes, READ_AHEAD_OCTETS))

    async def _read(
        self, planned: list[list[int]]
    ) -> AsyncGenerator[tuple[int, bytes | None], None]:
        for run in planned:
            if len(run) == 1:
                try:
                    yield run[0], await self._store.get_content(self._user, self._mailbox, run[0])
                except MessageNotFound:
                    yield run[0], None
                continue
            stream = self._store.read_contents(self._user, self._mailbox, run)
            async with aclosing(stream):
                async for uid, data, _ in stream:
                    yield uid, data

    async def get(self, uid: int) -> bytes:
        """Message ``uid``'s content. Raises MessageNotFound (expunged meanwhile)."""
        got, data = await anext(self._contents)
        if got != uid:
            raise RuntimeError(f"content of uid {got} read for uid {uid}: out of order")
        if data is None:
            raise MessageNotFound(f"no message with uid {uid} in {self._mailbox!r}")
        return data

    async def aclose(self) -> None:
        await self._contents.aclose()
