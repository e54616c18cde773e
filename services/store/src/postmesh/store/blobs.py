"""Blob content on its way into a backend: hashed (content address) and cut into chunks."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import AsyncIterable
from typing import IO

from postmesh.store.errors import InvalidArgument
from postmesh.store.model import BLOB_CHUNK_BYTES

# A PutBlob stream stays in memory up to this size, then spills to a temp file (TMPDIR).
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024


def chunk_count(size: int) -> int:
    return (size + BLOB_CHUNK_BYTES - 1) // BLOB_CHUNK_BYTES


class BlobSource:
    """Content whose sha256 and size are known; chunk ``n`` is always the same bytes, so two
    writers of one blob write identical chunks (what makes chunk writes idempotent)."""

    # Reads never block (the bytes are in memory): no worker thread needed to read a chunk.
    in_memory = False

    def __init__(self, blob_id: str, size: int) -> None:
        self.blob_id = blob_id
        self.size = size

    @property
    def chunks(self) -> int:
        return chunk_count(self.size)

    def read_chunk(self, n: int) -> bytes:
        raise NotImplementedError

    def read_all(self) -> bytes:
        """The whole content (to parse it once at delivery; bounded by the message limit)."""
        return b"".join(self.read_chunk(n) for n in range(self.chunks))

    def close(self) -> None:
        pass


class BytesSource(BlobSource):
    in_memory = True

    def __init__(self, content: bytes) -> None:
        super().__init__(hashlib.sha256(content).hexdigest(), len(content))
        self._content = content

    def read_chunk(self, n: int) -> bytes:
        return self._content[n * BLOB_CHUNK_BYTES : (n + 1) * BLOB_CHUNK_BYTES]

    def read_all(self) -> bytes:
        return self._content


class SpooledSource(BlobSource):
    def __init__(self, blob_id: str, size: int, spool: IO[bytes]) -> None:
        super().__init__(blob_id, size)
        self._spool = spool
        self._lock = threading.Lock()  # reads may run in worker threads

    def read_chunk(self, n: int) -> bytes:
        with self._lock:
            self._spool.seek(n * BLOB_CHUNK_BYTES)
            return self._spool.read(BLOB_CHUNK_BYTES)

    def close(self) -> None:
        self._spool.close()


async def spool(stream: AsyncIterable[bytes], max_bytes: int) -> SpooledSource:
    """Read a stream of unknown length: its address (sha256) is known only at the end, so the
    content is kept aside (memory, then a temp file) until it can be stored under it."""
    hasher = hashlib.sha256()
    size = 0
    # Closed by the returned source (or below on failure), not by a with block.
    buf: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    try:
        async for data in stream:
            size += len(data)
            if size > max_bytes:
                raise InvalidArgument(f"content exceeds the limit of {max_bytes} bytes")
            hasher.update(data)
            buf.write(data)
    except BaseException:
        buf.close()
        raise
    if size == 0:
        buf.close()
        raise InvalidArgument("content is empty")
    return SpooledSource(hasher.hexdigest(), size, buf)
